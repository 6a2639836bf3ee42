// Bearer-token authentication for autoquantd's RPCs: when a token is
// configured, every AutoQuant RPC must carry "authorization: Bearer <token>".
// The token is compared in constant time and never logged. grpc.health.v1
// stays open (orchestrators probe it without secrets) and so does server
// reflection (it describes only the public API).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/server_context.h"

namespace autoquant {

class TokenAuth {
 public:
  explicit TokenAuth(std::string token) : token_(std::move(token)) {}
  bool enabled() const { return !token_.empty(); }
  // Unauthenticated (without saying which part was wrong) unless allowed.
  absl::Status Check(const grpc::ServerContextBase& ctx) const;

 private:
  std::string token_;
};

// The token from `file` (surrounding whitespace trimmed) or else from the
// environment variable `env`; empty if neither is set. InvalidArgument for
// an unreadable or empty file.
absl::StatusOr<std::string> LoadToken(const std::string& file, const char* env);

}  // namespace autoquant
