#include "core/util/hash.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include "absl/strings/str_cat.h"
#include "core/util/file_util.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace {

// OpenSSL's own reason for the last failure, so the Status says why (e.g.
// "unsupported" when no provider offers SHA-256), not just where.
absl::Status OpenSslError(absl::string_view call) {
  unsigned long code = ERR_get_error();
  ERR_clear_error();  // leave no stale entries for the next caller on this thread
  char reason[256] = "no OpenSSL error recorded";
  if (code != 0) ERR_error_string_n(code, reason, sizeof(reason));
  return absl::InternalError(absl::StrCat("SHA-256: ", call, " failed: ", reason));
}

}  // namespace

struct Sha256::Impl {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Impl() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  if (impl_->ctx == nullptr) {
    status_ = OpenSslError("EVP_MD_CTX_new");
  } else if (EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) != 1) {
    status_ = OpenSslError("EVP_DigestInit_ex");
  }
}
Sha256::~Sha256() = default;

void Sha256::Update(const void* data, size_t n) {
  if (!status_.ok()) return;
  if (finished_) {
    status_ = absl::FailedPreconditionError("SHA-256: Update after HexDigest");
    return;
  }
  if (EVP_DigestUpdate(impl_->ctx, data, n) != 1) status_ = OpenSslError("EVP_DigestUpdate");
}

absl::StatusOr<std::string> Sha256::HexDigest() {
  RETURN_IF_ERROR(status_);
  if (finished_) return absl::FailedPreconditionError("SHA-256: HexDigest called twice");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(impl_->ctx, md, &len) != 1) {
    status_ = OpenSslError("EVP_DigestFinal_ex");
    return status_;
  }
  finished_ = true;
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

absl::StatusOr<std::string> Sha256Hex(absl::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.HexDigest();
}

absl::Status HashFile(const std::filesystem::path& path, Sha256* h) {
  RETURN_IF_ERROR(ReadFileChunks(path, [h](const char* data, size_t n) { h->Update(data, n); }));
  if (!h->status().ok()) {
    return absl::Status(h->status().code(), absl::StrCat("hashing ", path.string(), ": ", h->status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> Sha256HexEach(const std::vector<absl::string_view>& pieces, int threads) {
  std::vector<std::string> out(pieces.size());
  RETURN_IF_ERROR(ParallelFor(
      pieces.size(),
      [&](size_t i) -> absl::Status {
        Sha256 h;
        h.Update(pieces[i]);
        ASSIGN_OR_RETURN(out[i], h.HexDigest());
        return absl::OkStatus();
      },
      threads));
  return out;
}

}  // namespace autoquant
