#include "core/quant/formats.h"

#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;

TEST(FormatsTest, EveryFormatsNameParsesBackToIt) {
  for (Format f : {Format::kFp8, Format::kNone}) {
    EXPECT_EQ(SpecOf(f).format, f) << FormatName(f);
    ASSERT_OK_AND_ASSIGN(Format back, ParseFormat(FormatName(f)));
    EXPECT_EQ(back, f);
  }
}

// The names are what checkpoints (quant_algo), manifests and cached baselines hold: they never change.
TEST(FormatsTest, NamesRecipesAndBitsAreModelOpts) {
  EXPECT_EQ(FormatName(Format::kFp8), "FP8");
  EXPECT_EQ(SpecOf(Format::kFp8).recipe, "FP8_DEFAULT_CFG");
  EXPECT_EQ(SpecOf(Format::kFp8).bits, 8);
  EXPECT_EQ(RecipeString(Format::kFp8), "FP8_DEFAULT_CFG(effective-bits: 8.0)");
  EXPECT_EQ(FormatName(Format::kNone), "NONE");
  EXPECT_EQ(SpecOf(Format::kNone).bits, 16);
  EXPECT_TRUE(IsQuantized(Format::kFp8));
  EXPECT_FALSE(IsQuantized(Format::kNone));
}

TEST(FormatsTest, AnUnknownNameIsInvalidArgumentNamingTheKnownOnes) {
  for (const char* name : {"fp8", "", "NVFP4 ", "FP8_DEFAULT_CFG"}) {
    auto f = ParseFormat(name);
    ASSERT_FALSE(f.ok()) << name;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(f.status().message(), HasSubstr("known: FP8, NONE"));
  }
}

}  // namespace
}  // namespace autoquant
