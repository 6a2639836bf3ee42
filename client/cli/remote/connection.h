// How the remote commands reach autoquantd: the address, the bearer token and
// TLS, from flags or the environment, and the one conversion of a gRPC
// status into an absl::Status the exit codes are decided from.
//
//   ConnectionOptions o;            // filled by AddConnectionOptions' flags
//   ASSIGN_OR_RETURN(Connection c, Connect(o));
//   auto ctx = c.Context();         // carries the token and the deadline
//   grpc::Status s = c.stub()->GetServerInfo(ctx.get(), req, &info);
//   RETURN_IF_ERROR(c.Check(s, "GetServerInfo"));
//
// Includes gRPC: never include this from a translation unit that includes torch.
#pragma once

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "autoquant/v1/autoquant.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace autoquant::cli {

struct ConnectionOptions {
  std::string server;      // HOST:PORT; else $AUTOQUANT_SERVER; else 127.0.0.1:50051 (autoquantd's default)
  std::string token_file;  // else $AUTOQUANT_TOKEN_FILE; none: no token sent
  std::string tls_ca;      // PEM roots; enables TLS
  std::string tls_cert;    // PEM client certificate (mTLS), with tls_key
  std::string tls_key;
  double timeout_s = 30;  // deadline of each unary call
};

// --server, --token-file, --tls-ca, --tls-cert, --tls-key, --timeout on `cmd`.
void AddConnectionOptions(CLI::App* cmd, ConnectionOptions* o);

class Connection {
 public:
  Connection(std::string server, std::shared_ptr<grpc::Channel> channel, std::string token, double timeout_s);
  v1::AutoQuant::Stub* stub() const { return stub_.get(); }
  // For the other services on the same address (grpc.health.v1).
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const std::string& server() const { return server_; }
  // A context with the token; with the unary deadline unless `streaming`.
  std::unique_ptr<grpc::ClientContext> Context(bool streaming = false) const;
  // The server's status as an absl::Status with the same code, the message
  // prefixed with what was asked ("GetStatus: job ... not found"); UNAVAILABLE
  // also names the address tried.
  absl::Status Check(const grpc::Status& s, const std::string& what) const;

 private:
  std::string server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AutoQuant::Stub> stub_;
  std::string token_;
  double timeout_s_;
};

// Resolves the environment defaults and reads the token and PEM files.
// InvalidArgument for an unreadable or empty token file or PEM file, or
// --tls-cert without --tls-key (and the reverse) or without --tls-ca. No RPC
// is made: an unreachable server shows on the first call.
absl::StatusOr<Connection> Connect(const ConnectionOptions& o);

}  // namespace autoquant::cli
