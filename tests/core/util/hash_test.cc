#include "core/util/hash.h"

#include <openssl/evp.h>

#include "core/util/file_util.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;

constexpr char kAbcDigest[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

// Makes every implicit OpenSSL fetch ask for a FIPS implementation, which the
// default provider does not offer: what a FIPS-only system configuration does
// to a process without the FIPS module. Restored on scope exit.
class NoSha256Provider {
 public:
  NoSha256Provider() { ok_ = EVP_set_default_properties(nullptr, "fips=yes") == 1; }
  ~NoSha256Provider() { EVP_set_default_properties(nullptr, ""); }
  bool ok() const { return ok_; }

 private:
  bool ok_ = false;
};

TEST(Sha256Test, KnownVector) {
  ASSERT_OK_AND_ASSIGN(std::string hex, Sha256Hex("abc"));
  EXPECT_EQ(hex, kAbcDigest);
  Sha256 h;
  h.Update("a");
  h.Update("bc");
  ASSERT_OK_AND_ASSIGN(hex, h.HexDigest());
  EXPECT_EQ(hex, kAbcDigest);
}

TEST(Sha256Test, HashFileHashesTheContent) {
  auto path = testing::TempDir() / "f.txt";
  ASSERT_OK(WriteFileAtomic(path, "abc"));
  Sha256 h;
  ASSERT_OK(HashFile(path, &h));
  ASSERT_OK_AND_ASSIGN(std::string hex, h.HexDigest());
  EXPECT_EQ(hex, kAbcDigest);
}

TEST(Sha256Test, SecondDigestIsAnErrorNotAnotherHash) {
  Sha256 h;
  h.Update("abc");
  ASSERT_OK(h.HexDigest().status());
  EXPECT_EQ(h.HexDigest().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Sha256Test, UnavailableDigestIsReportedNotHashedAsGarbage) {
  NoSha256Provider no_sha;
  ASSERT_TRUE(no_sha.ok());
  auto hex = Sha256Hex("abc");
  ASSERT_FALSE(hex.ok()) << "hashed to " << *hex;
  EXPECT_EQ(hex.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(hex.status().message(), HasSubstr("EVP_DigestInit_ex"));

  auto path = testing::TempDir() / "f.txt";
  ASSERT_OK(WriteFileAtomic(path, "abc"));
  Sha256 h;
  absl::Status s = HashFile(path, &h);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr(path.string()));
  EXPECT_EQ(h.HexDigest().status().code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace autoquant
