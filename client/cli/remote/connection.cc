#include "client/cli/remote/connection.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace autoquant::cli {
namespace {

constexpr char kDefaultServer[] = "127.0.0.1:50051";

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  if (in) ss << in.rdbuf();
  if (!in || in.bad()) return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": cannot be read"));
  return ss.str();
}

std::string FromEnv(const std::string& flag_value, const char* env) {
  if (!flag_value.empty()) return flag_value;
  const char* v = std::getenv(env);
  return v ? v : "";
}

}  // namespace

void AddConnectionOptions(CLI::App* cmd, ConnectionOptions* o) {
  cmd->add_option("--server", o->server,
                  std::string("daemon address HOST:PORT (else $AUTOQUANT_SERVER, else ") + kDefaultServer + ")");
  cmd->add_option("--token-file", o->token_file, "file holding the daemon's bearer token (else $AUTOQUANT_TOKEN_FILE)");
  cmd->add_option("--tls-ca", o->tls_ca, "PEM CA bundle to verify the daemon's certificate (enables TLS)");
  cmd->add_option("--tls-cert", o->tls_cert, "PEM client certificate for mTLS (with --tls-key)");
  cmd->add_option("--tls-key", o->tls_key, "PEM private key of --tls-cert");
  cmd->add_option("--timeout", o->timeout_s, "seconds each request may take")->check(CLI::PositiveNumber);
}

Connection::Connection(std::string server, std::shared_ptr<grpc::Channel> channel, std::string token, double timeout_s)
    : server_(std::move(server)),
      channel_(std::move(channel)),
      stub_(v1::AutoQuant::NewStub(channel_)),
      token_(std::move(token)),
      timeout_s_(timeout_s) {}

std::unique_ptr<grpc::ClientContext> Connection::Context(bool streaming) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
  if (!streaming) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(timeout_s_ * 1000)));
  }
  return ctx;
}

absl::StatusOr<Connection> Connect(const ConnectionOptions& o) {
  std::string server = FromEnv(o.server, "AUTOQUANT_SERVER");
  if (server.empty()) server = kDefaultServer;
  std::string token;
  if (const std::string file = FromEnv(o.token_file, "AUTOQUANT_TOKEN_FILE"); !file.empty()) {
    auto text = ReadFile(file, "--token-file");
    if (!text.ok()) return text.status();
    token = std::string(absl::StripAsciiWhitespace(*text));
    if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("--token-file ", file, " is empty"));
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together; give both or neither");
  }
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!o.tls_ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    auto ca = ReadFile(o.tls_ca, "--tls-ca");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    if (!o.tls_cert.empty()) {
      auto cert = ReadFile(o.tls_cert, "--tls-cert");
      if (!cert.ok()) return cert.status();
      auto key = ReadFile(o.tls_key, "--tls-key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    creds = grpc::SslCredentials(ssl);
  } else if (!o.tls_cert.empty()) {
    return absl::InvalidArgumentError("--tls-cert needs --tls-ca (the CA that signed the daemon's certificate)");
  }
  return Connection(server, grpc::CreateChannel(server, creds), std::move(token), o.timeout_s);
}

absl::Status Connection::Check(const grpc::Status& s, const std::string& what) const {
  if (s.ok()) return absl::OkStatus();
  std::string message = absl::StrCat(what, ": ", s.error_message());
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    absl::StrAppend(&message, " (server ", server_, ")");
  }
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), message);
}

}  // namespace autoquant::cli
