#include "core/quant/scheme_name.h"

#include <string>

#include "gmock/gmock.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;

TEST(ValidateSchemeNameTest, AcceptsPlainNames) {
  for (const char* ok : {"top10", "fp8-eb12.5", "a", "Qwen2.5-VL_top50+kl", "x..y"}) {
    EXPECT_TRUE(ValidateSchemeName(ok).ok()) << ok;
  }
  EXPECT_TRUE(ValidateSchemeName(std::string(kMaxSchemeNameLength, 'a')).ok());
}

TEST(ValidateSchemeNameTest, RefusesAnythingThatIsNotOnePlainPathComponent) {
  for (const std::string& bad :
       {std::string("../../evil"), std::string("a/b"), std::string(".."), std::string("."), std::string(".hidden"),
        std::string(""), std::string("a b"), std::string("a\\b"), std::string("a\0b", 3), std::string("tab\there"),
        std::string(kMaxSchemeNameLength + 1, 'a')}) {
    absl::Status s = ValidateSchemeName(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("1 to 128 characters")) << bad;
  }
  EXPECT_THAT(ValidateSchemeName("a/b").message(), HasSubstr("contains '/'"));
  EXPECT_THAT(ValidateSchemeName(std::string("a\0b", 3)).message(), HasSubstr("\\x00"));
}

TEST(ValidateSchemeNameTest, RefusesNamesThatWouldReadAsCommandLineOptions) {
  for (const char* bad : {"-rf", "--overwrite", "-"}) {
    absl::Status s = ValidateSchemeName(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("starts with '-'")) << bad;
  }
  EXPECT_TRUE(ValidateSchemeName("top10-").ok());
}

}  // namespace
}  // namespace autoquant
