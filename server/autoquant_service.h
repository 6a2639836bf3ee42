// The autoquant.v1.AutoQuant service: thin callback-API adapters from RPCs
// to the JobManager and the engine. Handlers only validate, read and store;
// the device work happens on the JobManager's worker. Every RPC checks the
// bearer token first, maps errors through ToGrpcStatus, and is counted in
// autoquant_rpcs_total.
#pragma once

#include "autoquant/v1/autoquant.grpc.pb.h"
#include "server/daemon_context.h"

namespace autoquant {

class AutoQuantService final : public v1::AutoQuant::CallbackService {
 public:
  explicit AutoQuantService(DaemonContext* ctx) : d_(ctx) {}

  grpc::ServerUnaryReactor* SubmitScheme(grpc::CallbackServerContext* ctx, const v1::SubmitSchemeRequest* req,
                                         v1::Job* resp) override;
  grpc::ServerUnaryReactor* SubmitSweep(grpc::CallbackServerContext* ctx, const v1::SubmitSweepRequest* req,
                                        v1::SubmitSweepResponse* resp) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx, const v1::GetStatusRequest* req,
                                      v1::Job* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* req,
                                     v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx, const v1::CancelJobRequest* req,
                                      v1::Job* resp) override;
  grpc::ServerWriteReactor<v1::LogLine>* StreamLogs(grpc::CallbackServerContext* ctx,
                                                    const v1::StreamLogsRequest* req) override;
  grpc::ServerUnaryReactor* GetSensitivity(grpc::CallbackServerContext* ctx, const v1::GetSensitivityRequest* req,
                                           v1::Sensitivity* resp) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* ctx, const v1::GetServerInfoRequest* req,
                                          v1::ServerInfo* resp) override;
  grpc::ServerUnaryReactor* EvaluateScheme(grpc::CallbackServerContext* ctx, const v1::EvaluateSchemeRequest* req,
                                           v1::Job* resp) override;
  grpc::ServerUnaryReactor* GetReport(grpc::CallbackServerContext* ctx, const v1::GetReportRequest* req,
                                      v1::Report* resp) override;

 private:
  DaemonContext* d_;
};

}  // namespace autoquant
