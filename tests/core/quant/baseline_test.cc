#include "core/quant/baseline.h"

#include <fstream>

#include "core/util/file_util.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

// Three Linears in two groups (q+k, o), FP8 + NONE, as GetBaseline builds them.
Baseline TwoGroups() {
  Baseline b;
  b.inputs.model_fingerprint = "m";
  b.inputs.calib_fingerprint = "c";
  b.inputs.formats = {Format::kFp8};
  b.inputs.compute_dtype = "float32";
  b.key = *BaselineKey(b.inputs);
  b.formats = {Format::kFp8, Format::kNone};
  for (const char* m : {"q_proj", "k_proj", "o_proj"}) {
    b.linears.push_back({std::string("model.language_model.layers.0.self_attn.") + m, 64, 8, 8});
  }
  b.groups.push_back(
      {"language_model.layers.0.self_attn.q_proj.quant_recipe", {b.linears[0].name, b.linears[1].name}, {0, 1}, 128});
  b.groups.push_back({"language_model.layers.0.self_attn.o_proj.quant_recipe", {b.linears[2].name}, {2}, 64});
  b.scores = {{5, 0}, {2, 0}};
  for (const auto& g : b.groups) {
    b.costs.push_back({Baseline::Cost(g.weight_numel, b.formats[0]), Baseline::Cost(g.weight_numel, b.formats[1])});
  }
  b.total_weight_numel = 192;
  b.input_amax = {{1.5f, 2.5f, 0.25f}};
  b.weight_amax = {{0.5f, 0.75f, 1.0f}};
  b.ComputeRanking();
  return b;
}

// BaselineFromJson(j) must fail with DataLoss and a message naming the problem.
void ExpectRejected(const json& j, const std::string& why) {
  auto b = BaselineFromJson(j);
  ASSERT_FALSE(b.ok()) << "accepted: " << j.dump();
  EXPECT_EQ(b.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(b.status().message(), HasSubstr(why));
}

TEST(BaselineJsonTest, RoundTrips) {
  Baseline b = TwoGroups();
  EXPECT_THAT(b.ranking, ElementsAre(1, 0));
  ASSERT_OK_AND_ASSIGN(Baseline back, BaselineFromJson(BaselineToJson(b)));
  EXPECT_EQ(back.key, b.key);
  EXPECT_EQ(back.ranking, b.ranking);
  EXPECT_EQ(back.scores, b.scores);
  EXPECT_EQ(back.costs, b.costs);
  EXPECT_EQ(back.input_amax, b.input_amax);
  EXPECT_EQ(back.weight_amax, b.weight_amax);
  EXPECT_EQ(back.groups[0].modules, b.groups[0].modules);
}

// A format this autoquant does not know, or one recorded with other bits or recipe than its registry
// gives (another version's baseline), is not reinterpreted: the baseline is recomputed.
TEST(BaselineJsonTest, UnknownOrRedefinedFormatsAreRejected) {
  json j = BaselineToJson(TwoGroups());
  EXPECT_EQ(j["formats"][0]["name"], "FP8");
  EXPECT_EQ(j["formats"][0]["bits"], 8);
  EXPECT_EQ(j["formats"][1]["name"], "NONE");
  json unknown = j;
  unknown["formats"][0]["name"] = "INT3";
  ExpectRejected(unknown, "unknown quantization format 'INT3'");
  json other_bits = j;
  other_bits["formats"][0]["bits"] = 4;
  ExpectRejected(other_bits, "not as this autoquant defines it");
  json other_recipe = j;
  other_recipe["formats"][0]["recipe"] = "FP8_PER_CHANNEL_CFG";
  ExpectRejected(other_recipe, "not as this autoquant defines it");
  json none_first = j;
  std::swap(none_first["formats"][0], none_first["formats"][1]);
  ExpectRejected(none_first, "NONE");
}

TEST(BaselineJsonTest, MissingFieldIsRejected) {
  json j = BaselineToJson(TwoGroups());
  j.erase("ranking");
  ExpectRejected(j, "ranking");
}

TEST(BaselineJsonTest, WrongNumberOfScoresOrCostsIsRejected) {
  json j = BaselineToJson(TwoGroups());
  j["groups"][1]["scores"] = {2};
  ExpectRejected(j, "scores[1] has 1 entries, expected 2");
  j = BaselineToJson(TwoGroups());
  j["groups"][0]["costs"] = {64, 128, 128};
  ExpectRejected(j, "costs[0] has 3 entries, expected 2");
}

TEST(BaselineJsonTest, WrongAmaxSizesAreRejected) {
  json j = BaselineToJson(TwoGroups());
  j["input_amax"][0] = {1.5, 2.5};  // one Linear short: the exporter would read past it
  ExpectRejected(j, "input_amax[0] has 2 entries, expected 3");
  j = BaselineToJson(TwoGroups());
  j["weight_amax"].push_back({1, 1, 1});  // an amax row for NONE
  ExpectRejected(j, "weight_amax has 2 formats, expected 1");
}

TEST(BaselineJsonTest, RankingIndexOutOfRangeIsRejected) {
  json j = BaselineToJson(TwoGroups());
  j["ranking"] = {1, 7};
  ExpectRejected(j, "ranking[1] = 7 is out of range (2 groups)");
  j["ranking"] = {1, -1};  // not a size_t: refused while reading (JsonInt), never a huge index
  ExpectRejected(j, "-1 is out of range");
}

TEST(BaselineJsonTest, RankingThatIsNotAPermutationIsRejected) {
  json j = BaselineToJson(TwoGroups());
  j["ranking"] = {1, 1};
  ExpectRejected(j, "ranking is not a permutation");
  j["ranking"] = {1};
  ExpectRejected(j, "ranking has 1 entries for 2 groups");
  j["ranking"] = {0, 1};  // a permutation, but group 0 scores higher than group 1
  ExpectRejected(j, "ranking is not ordered by score");
}

TEST(BaselineJsonTest, GroupsThatDoNotFollowFromTheLinearsAreRejected) {
  json j = BaselineToJson(TwoGroups());
  j["groups"][1]["linears"] = {3};
  ExpectRejected(j, "names Linear 3 of 3");
  j = BaselineToJson(TwoGroups());
  j["groups"][1]["linears"] = {1};
  ExpectRejected(j, "is in two groups");
  j = BaselineToJson(TwoGroups());
  j["groups"][1]["numel"] = 65;
  ExpectRejected(j, "has numel 65 but its Linears sum to 64");
  j = BaselineToJson(TwoGroups());
  j["groups"][1]["costs"] = {31, 64};
  ExpectRejected(j, "is not numel x bits / 16");
  j = BaselineToJson(TwoGroups());
  j["total_weight_numel"] = 1;
  ExpectRejected(j, "total_weight_numel is 1");
}

TEST(BaselineJsonTest, NegativeNumbersAreRejected) {
  json j = BaselineToJson(TwoGroups());
  j["groups"][0]["scores"] = {-5, 0};
  ExpectRejected(j, "scores[0][0] = -5 is not a finite non-negative number");
  j = BaselineToJson(TwoGroups());
  j["weight_amax"][0][2] = -1;
  ExpectRejected(j, "weight_amax[0][2] = -1");
}

TEST(BaselineJsonTest, MistypedFieldIsRejected) {
  json j = BaselineToJson(TwoGroups());
  j["groups"][0]["scores"] = "high";
  ExpectRejected(j, "malformed");
}

// Found by fuzzing (tests/fuzz/baseline_fuzz.cc): integers read with a plain conversion, so
// a float out of range was undefined behaviour.
TEST(BaselineJsonTest, NonIntegerOrOutOfRangeIntegersAreRejected) {
  json j = BaselineToJson(TwoGroups());
  // Bits are a double (NVFP4 costs 4.5); a value the registry does not define is another version's.
  j["formats"][0]["bits"] = 1e30;
  ExpectRejected(j, "not as this autoquant defines it");
  j["formats"][0]["bits"] = "eight";
  ExpectRejected(j, "not as this autoquant defines it");
  j = BaselineToJson(TwoGroups());
  j["linears"][0]["numel"] = 2.5;
  ExpectRejected(j, "malformed");
  j = BaselineToJson(TwoGroups());
  j["inputs"]["calib_steps"] = int64_t{1} << 40;
  ExpectRejected(j, "malformed");
}

TEST(LoadBaselineTest, MissingEntryIsNotFound) {
  auto dir = testing::TempDir();
  EXPECT_EQ(LoadBaseline(dir, TwoGroups().key).status().code(), absl::StatusCode::kNotFound);
}

TEST(LoadBaselineTest, TruncatedFileIsDataLossNamingTheFile) {
  auto dir = testing::TempDir();
  Baseline b = TwoGroups();
  ASSERT_OK(SaveBaseline(b, dir));
  const auto path = dir / ("baseline-" + b.key + ".json");
  ASSERT_OK_AND_ASSIGN(std::string text, ReadFile(path));
  ASSERT_OK(WriteFileAtomic(path, text.substr(0, text.size() / 2)));
  auto loaded = LoadBaseline(dir, b.key);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(), HasSubstr(path.string()));
  EXPECT_THAT(loaded.status().message(), HasSubstr("not valid JSON"));
}

TEST(LoadBaselineTest, InconsistentFileIsDataLossNamingTheFileAndTheProblem) {
  auto dir = testing::TempDir();
  Baseline b = TwoGroups();
  ASSERT_OK(SaveBaseline(b, dir));
  const auto path = dir / ("baseline-" + b.key + ".json");
  json j = BaselineToJson(b);
  j["ranking"] = {1, 2};
  ASSERT_OK(WriteFileAtomic(path, j.dump()));
  auto loaded = LoadBaseline(dir, b.key);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(), HasSubstr(path.string()));
  EXPECT_THAT(loaded.status().message(), HasSubstr("ranking[1] = 2 is out of range"));
}

TEST(LoadBaselineTest, InputsThatDoNotHashToTheKeyAreRejected) {
  auto dir = testing::TempDir();
  Baseline b = TwoGroups();
  ASSERT_OK(SaveBaseline(b, dir));
  ASSERT_OK(LoadBaseline(dir, b.key).status());
  json j = BaselineToJson(b);
  j["inputs"]["score_steps"] = 3;  // a baseline of other settings under this key
  ASSERT_OK(WriteFileAtomic(dir / ("baseline-" + b.key + ".json"), j.dump()));
  auto loaded = LoadBaseline(dir, b.key);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(), HasSubstr("key mismatch"));
}

}  // namespace
}  // namespace autoquant
