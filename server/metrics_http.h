// autoquantd's /metrics endpoint (prometheus-cpp's Exposer, an embedded
// civetweb server) under the rules of --listen:
//
// - A bare port (--metrics 9464) means loopback, 127.0.0.1:9464.
// - Off loopback the daemon refuses to start unless a token is configured
//   (--token-file / AUTOQUANT_TOKEN) or --insecure is given.
// - With a token configured, every scrape must carry it, on loopback too:
//   "Authorization: Bearer <token>" or HTTP basic auth whose password is the
//   token (any user name), the two forms Prometheus scrape configs offer
//   (authorization.credentials_file, basic_auth.password_file). Anything
//   else gets 401.
// - Slow clients cannot stall scraping: civetweb drops a request not fully
//   received within kMetricsRequestTimeoutMs, and kMetricsThreads threads
//   serve connections, so a few half-sent requests leave threads free.
//
//   ASSIGN_OR_RETURN(auto server, MetricsServer::Start({.flag = "9464", .token = t}, registry));
//   server->address();  // "127.0.0.1:9464"
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"

namespace autoquant {

inline constexpr int kMetricsThreads = 8;
inline constexpr int kMetricsRequestTimeoutMs = 5000;

struct MetricsHttpOptions {
  std::string flag;       // --metrics: HOST:PORT, [HOST]:PORT, or a bare PORT (loopback)
  std::string token;      // required of every scrape when not empty
  bool insecure = false;  // allow off loopback without a token
};

// What --metrics binds: a bare port becomes 127.0.0.1:PORT, anything else is kept.
std::string MetricsBindAddress(const std::string& flag);

// Whether an Authorization header's value carries `token` (Bearer, or Basic with the token as
// password). Constant-time in the token's bytes; false for an empty token.
bool MetricsAuthorized(absl::string_view authorization, absl::string_view token);

class MetricsServer {
 public:
  // Listens and serves `collectable` at /metrics. InvalidArgument (naming --metrics and what to
  // pass) off loopback without token or --insecure; Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const MetricsHttpOptions& options, const std::weak_ptr<prometheus::Collectable>& collectable);
  ~MetricsServer();

  // HOST:PORT actually bound (the port filled in for port 0).
  const std::string& address() const { return address_; }

 private:
  MetricsServer() = default;

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
  int port_ = 0;
};

}  // namespace autoquant
