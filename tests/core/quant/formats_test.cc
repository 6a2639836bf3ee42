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
    EXPECT_THAT(f.status().message(), HasSubstr("known: NVFP4, W4A16_NVFP4, FP8, NONE"));
  }
}

TEST(FormatsTest, Nvfp4CostsFourAndAHalfBitsInBlocksOfSixteen) {
  EXPECT_EQ(SpecOf(Format::kNvfp4).bits, 4.5);
  EXPECT_EQ(SpecOf(Format::kNvfp4W4A16).bits, 4.5);
  EXPECT_EQ(SpecOf(Format::kNvfp4).block_size, 16);
  EXPECT_TRUE(SpecOf(Format::kNvfp4).quantizes_input);
  EXPECT_FALSE(SpecOf(Format::kNvfp4W4A16).quantizes_input);
  EXPECT_EQ(RecipeString(Format::kNvfp4), "NVFP4_DEFAULT_CFG(effective-bits: 4.5)");
  EXPECT_EQ(RecipeString(Format::kNvfp4W4A16), "W4A16_NVFP4_CFG(effective-bits: 4.5)");
  for (Format f : QuantizedFormats()) {
    ASSERT_OK_AND_ASSIGN(Format back, ParseFormat(FormatName(f)));
    EXPECT_EQ(back, f);
  }
}

TEST(FormatsTest, CandidatesAreSortedMostAggressiveFirstWithNoneLast) {
  ASSERT_OK_AND_ASSIGN(auto fp8, CandidateFormats({}));
  EXPECT_EQ(fp8, (std::vector<Format>{Format::kFp8, Format::kNone}));
  ASSERT_OK_AND_ASSIGN(auto mixed, CandidateFormats({Format::kFp8, Format::kNvfp4}));
  EXPECT_EQ(mixed, (std::vector<Format>{Format::kNvfp4, Format::kFp8, Format::kNone}));
  ASSERT_OK_AND_ASSIGN(auto three, CandidateFormats({Format::kFp8, Format::kNvfp4W4A16, Format::kNvfp4}));
  EXPECT_EQ(three, (std::vector<Format>{Format::kNvfp4, Format::kNvfp4W4A16, Format::kFp8, Format::kNone}));
  auto none = CandidateFormats({Format::kNone});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.status().message(), HasSubstr("NONE"));
  auto twice = CandidateFormats({Format::kFp8, Format::kFp8});
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(twice.status().message(), HasSubstr("FP8 twice"));
}

TEST(FormatsTest, BlockFormatsNeedWholeBlocksAndKeepOutOfTheVisionTower) {
  EXPECT_TRUE(FormatFits(Format::kNvfp4, 2048, false));
  EXPECT_FALSE(FormatFits(Format::kNvfp4, 3420, false));
  EXPECT_FALSE(FormatFits(Format::kNvfp4, 1280, true));
  EXPECT_FALSE(FormatFits(Format::kNvfp4W4A16, 1280, true));
  EXPECT_TRUE(FormatFits(Format::kFp8, 3420, true));
  EXPECT_TRUE(FormatFits(Format::kNone, 3, true));
}

TEST(FormatsTest, ListsParseInAnyCase) {
  ASSERT_OK_AND_ASSIGN(auto f, ParseFormatList(" nvfp4, FP8 ,w4a16_nvfp4"));
  EXPECT_EQ(f, (std::vector<Format>{Format::kNvfp4, Format::kFp8, Format::kNvfp4W4A16}));
  ASSERT_OK_AND_ASSIGN(auto empty, ParseFormatList(""));
  EXPECT_TRUE(empty.empty());
  auto bad = ParseFormatList("nvfp4,int4");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("'INT4'"));
}

}  // namespace
}  // namespace autoquant
