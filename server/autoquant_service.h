// The autoquant.v1.AutoQuant service: thin callback-API adapters from RPCs
// to the JobManager and the engine. Handlers only validate, read and store;
// the device work happens on the JobManager's worker. Every RPC checks the
// bearer token first, maps errors through ToGrpcStatus, and is counted in
// autoquant_rpcs_total.
//
// The methods are registered raw (their messages as bytes) and parsed here:
// gRPC's typed callback handler (1.51, server_callback_handlers.h) answers a
// request that does not parse with UNIMPLEMENTED and no message, where a
// client deserves INVALID_ARGUMENT saying what was wrong. The wire format is
// unchanged; clients use the ordinary stubs.
//
// ListJobs replies stay under 3 MiB whatever is stored (gRPC clients accept
// 4 MiB by default): a page ends early, with a next_page_token, when the next
// job would not fit.
#pragma once

#include "autoquant/v1/autoquant.grpc.pb.h"
#include "server/daemon_context.h"

namespace autoquant {

namespace internal {
using RawAutoQuantService = v1::AutoQuant::WithRawCallbackMethod_SubmitScheme<
    v1::AutoQuant::WithRawCallbackMethod_SubmitSweep<v1::AutoQuant::WithRawCallbackMethod_GetStatus<
        v1::AutoQuant::WithRawCallbackMethod_ListJobs<v1::AutoQuant::WithRawCallbackMethod_CancelJob<
            v1::AutoQuant::WithRawCallbackMethod_StreamLogs<v1::AutoQuant::WithRawCallbackMethod_GetSensitivity<
                v1::AutoQuant::WithRawCallbackMethod_GetServerInfo<v1::AutoQuant::WithRawCallbackMethod_EvaluateScheme<
                    v1::AutoQuant::WithRawCallbackMethod_GetReport<v1::AutoQuant::Service>>>>>>>>>>;
}  // namespace internal

// The most bytes of jobs one ListJobs reply carries.
inline constexpr size_t kMaxListReplyBytes = 3 << 20;

class AutoQuantService final : public internal::RawAutoQuantService {
 public:
  explicit AutoQuantService(DaemonContext* ctx) : d_(ctx) {}

  using Unary = grpc::ServerUnaryReactor;
  using Ctx = grpc::CallbackServerContext;
  using Bytes = grpc::ByteBuffer;

  Unary* SubmitScheme(Ctx* ctx, const Bytes* req, Bytes* resp) override;
  Unary* SubmitSweep(Ctx* ctx, const Bytes* req, Bytes* resp) override;
  Unary* GetStatus(Ctx* ctx, const Bytes* req, Bytes* resp) override;
  Unary* ListJobs(Ctx* ctx, const Bytes* req, Bytes* resp) override;
  Unary* CancelJob(Ctx* ctx, const Bytes* req, Bytes* resp) override;
  grpc::ServerWriteReactor<Bytes>* StreamLogs(Ctx* ctx, const Bytes* req) override;
  Unary* GetSensitivity(Ctx* ctx, const Bytes* req, Bytes* resp) override;
  Unary* GetServerInfo(Ctx* ctx, const Bytes* req, Bytes* resp) override;
  Unary* EvaluateScheme(Ctx* ctx, const Bytes* req, Bytes* resp) override;
  Unary* GetReport(Ctx* ctx, const Bytes* req, Bytes* resp) override;

 private:
  // Where a handler's body runs: the writes pool if it writes the job store, the reads pool if it
  // reads the store or scheme files, the callback thread if it reads only memory.
  enum class Where { kWrites, kReads, kCallbackThread };
  // Checks the token, then (where `where` says) parses the request, runs `body`, serializes the
  // reply; finishes once.
  template <typename Req, typename Resp, typename Body>
  Unary* Handle(Ctx* ctx, const char* method, const Bytes* in, Bytes* out, Body body, Where where);
  // Parse, body, serialize; Cancelled without running `body` when the client has gone.
  template <typename Req, typename Resp, typename Body>
  absl::Status Serve(Ctx* ctx, const Bytes& in, Bytes* out, const Body& body);
  // Counts the RPC, then finishes it; nothing of the call may be touched after.
  void Answer(Unary* reactor, const char* method, const absl::Status& s);

  absl::Status DoSubmitScheme(const v1::SubmitSchemeRequest& req, v1::Job* resp);
  absl::Status DoSubmitSweep(const v1::SubmitSweepRequest& req, v1::SubmitSweepResponse* resp);
  absl::Status DoGetStatus(const v1::GetStatusRequest& req, v1::Job* resp);
  absl::Status DoListJobs(const v1::ListJobsRequest& req, v1::ListJobsResponse* resp);
  absl::Status DoCancelJob(const v1::CancelJobRequest& req, v1::Job* resp);
  absl::Status DoGetSensitivity(const v1::GetSensitivityRequest& req, v1::Sensitivity* resp);
  absl::Status DoGetServerInfo(v1::ServerInfo* resp);
  absl::Status DoEvaluateScheme(const v1::EvaluateSchemeRequest& req, v1::Job* resp);
  absl::Status DoGetReport(const v1::GetReportRequest& req, v1::Report* resp);

  DaemonContext* d_;
};

}  // namespace autoquant
