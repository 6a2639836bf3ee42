#include "server/token_auth.h"

#include <openssl/crypto.h>

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/util/file_util.h"

namespace autoquant {

absl::Status TokenAuth::Check(const grpc::ServerContextBase& ctx) const {
  if (!enabled()) return absl::OkStatus();
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError(
        "this daemon requires a bearer token: send metadata 'authorization: Bearer <token>' "
        "(autoquant CLI: --token-file or AUTOQUANT_TOKEN_FILE)");
  }
  absl::string_view value(it->second.data(), it->second.size());
  const bool bearer = absl::ConsumePrefix(&value, "Bearer ");
  const bool match =
      bearer && value.size() == token_.size() && CRYPTO_memcmp(value.data(), token_.data(), token_.size()) == 0;
  if (!match) return absl::UnauthenticatedError("the bearer token was not accepted");
  return absl::OkStatus();
}

absl::StatusOr<std::string> LoadToken(const std::string& file, const char* env) {
  if (!file.empty()) {
    auto text = ReadFile(file);
    if (!text.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot read --token-file: ", text.status().message()));
    }
    std::string token(absl::StripAsciiWhitespace(*text));
    if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("--token-file ", file, " is empty"));
    return token;
  }
  const char* v = env ? std::getenv(env) : nullptr;
  return std::string(v ? absl::StripAsciiWhitespace(v) : "");
}

}  // namespace autoquant
