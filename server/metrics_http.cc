#include "server/metrics_http.h"

#include <openssl/crypto.h>

#include <map>
#include <mutex>

#include "CivetServer.h"
#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "civetweb.h"
#include "server/daemon_options.h"
#include "spdlog/spdlog.h"

namespace autoquant {
namespace {

// civetweb's callbacks are plain functions without a user pointer that reaches this object, so the
// tokens are found by the port a request arrived on (each MetricsServer listens on its own port).
// A port not (yet) registered gets 401: the check fails closed.
std::mutex& TokensMutex() {
  static std::mutex mu;
  return mu;
}
std::map<int, std::string>& TokensByPort() {
  static auto* tokens = new std::map<int, std::string>();
  return *tokens;
}

bool EqualConstantTime(absl::string_view a, absl::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// Called by civetweb for every request before any handler: 0 lets the request through, any other
// value means it was answered here.
int CheckScrape(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  std::string token;
  {
    std::lock_guard<std::mutex> lock(TokensMutex());
    auto it = TokensByPort().find(info->server_port);
    if (it != TokensByPort().end()) token = it->second;
  }
  const char* authorization = mg_get_header(conn, "Authorization");
  if (MetricsAuthorized(authorization ? authorization : "", token)) return 0;
  static constexpr char kBody[] =
      "autoquantd /metrics needs the daemon's token: 'Authorization: Bearer <token>' or basic auth with the "
      "token as password\n";
  mg_printf(conn,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"autoquantd\"\r\n"
            "Content-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
            sizeof(kBody) - 1, kBody);
  return 401;
}

// civetweb's own errors (a port it cannot bind, a thread it cannot start) into the daemon's log.
int LogCivetweb(const mg_connection*, const char* message) {
  spdlog::warn("/metrics (civetweb): {}", message);
  return 1;
}

}  // namespace

std::string MetricsBindAddress(const std::string& flag) {
  if (!flag.empty() &&
      absl::c_all_of(flag, [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); })) {
    return absl::StrCat("127.0.0.1:", flag);
  }
  return flag;
}

bool MetricsAuthorized(absl::string_view authorization, absl::string_view token) {
  if (token.empty()) return false;
  absl::string_view value = absl::StripAsciiWhitespace(authorization);
  const size_t space = value.find(' ');
  if (space == absl::string_view::npos) return false;
  const std::string scheme = absl::AsciiStrToLower(value.substr(0, space));
  absl::string_view credentials = absl::StripLeadingAsciiWhitespace(value.substr(space + 1));
  if (scheme == "bearer") return EqualConstantTime(credentials, token);
  if (scheme != "basic") return false;
  std::string decoded;
  if (!absl::Base64Unescape(credentials, &decoded)) return false;
  const size_t colon = decoded.find(':');  // user names cannot hold ':', passwords can
  if (colon == std::string::npos) return false;
  return EqualConstantTime(absl::string_view(decoded).substr(colon + 1), token);
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const MetricsHttpOptions& o, const std::weak_ptr<prometheus::Collectable>& collectable) {
  const std::string bind = MetricsBindAddress(o.flag);
  if (!IsLoopbackAddress(bind) && o.token.empty() && !o.insecure) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics ", o.flag,
        " is reachable off this machine but no token is configured: pass --token-file FILE "
        "(or set AUTOQUANT_TOKEN; scrapes then send it as a bearer token or basic-auth password), listen on "
        "loopback (a bare port such as --metrics 9464 means 127.0.0.1:9464), or --insecure to serve it openly"));
  }
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  static const CivetCallbacks open_callbacks = [] {
    CivetCallbacks c;
    c.log_message = LogCivetweb;
    return c;
  }();
  static const CivetCallbacks token_callbacks = [] {
    CivetCallbacks c;
    c.log_message = LogCivetweb;
    c.begin_request = CheckScrape;
    return c;
  }();
  try {
    server->exposer_ = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", bind, "num_threads", std::to_string(kMetricsThreads),
                                 "request_timeout_ms", std::to_string(kMetricsRequestTimeoutMs)},
        o.token.empty() ? &open_callbacks : &token_callbacks);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("--metrics ", o.flag, ": cannot listen on ", bind, " (", e.what(),
                                               "); is the port in use? Use HOST:PORT, e.g. 127.0.0.1:9464"));
  }
  auto ports = server->exposer_->GetListeningPorts();
  server->port_ = ports.empty() ? 0 : ports.front();
  if (!o.token.empty()) {
    std::lock_guard<std::mutex> lock(TokensMutex());
    TokensByPort()[server->port_] = o.token;
  }
  server->exposer_->RegisterCollectable(collectable);
  const std::string host = HostOf(bind);
  server->address_ =
      absl::StrCat(host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host, ":", server->port_);
  return server;
}

MetricsServer::~MetricsServer() {
  exposer_.reset();  // stops civetweb's threads before the token goes
  std::lock_guard<std::mutex> lock(TokensMutex());
  TokensByPort().erase(port_);
}

}  // namespace autoquant
