// The typed scheme request: every name of every enum round-trips through its one Name / Parse pair,
// the one validation names fields as the API spells them, and the store's JSON keeps its old shape.
#include "core/quant/scheme_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "tests/test_util.h"

namespace autoquant {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(SchemeSpecNamesTest, EveryEnumValueRoundTripsAndUnknownNamesAreRefusedWithTheChoices) {
  for (ScoreMethod m : {ScoreMethod::kGradient, ScoreMethod::kKlDiv}) {
    ASSERT_OK_AND_ASSIGN(ScoreMethod back, ParseScoreMethod(ScoreMethodName(m)));
    EXPECT_EQ(back, m);
  }
  for (ExportFormat f : {ExportFormat::kModelOpt, ExportFormat::kCompressedTensors}) {
    ASSERT_OK_AND_ASSIGN(ExportFormat back, ParseExportFormat(ExportFormatName(f)));
    EXPECT_EQ(back, f);
  }
  for (ExportLayout l : {ExportLayout::kStandalone, ExportLayout::kShared}) {
    ASSERT_OK_AND_ASSIGN(ExportLayout back, ParseExportLayout(ExportLayoutName(l)));
    EXPECT_EQ(back, l);
  }
  for (Phase p : {Phase::kLoad, Phase::kCalibrate, Phase::kScore, Phase::kSearch, Phase::kExport, Phase::kEvaluate}) {
    ASSERT_OK_AND_ASSIGN(Phase back, ParsePhase(PhaseName(p)));
    EXPECT_EQ(back, p);
  }
  // The spellings users type.
  EXPECT_EQ(*ParseScoreMethod("KL-div"), ScoreMethod::kKlDiv);
  EXPECT_EQ(*ParseExportFormat("compressed_tensors"), ExportFormat::kCompressedTensors);
  EXPECT_THAT(ParseScoreMethod("fisher").status().message(), HasSubstr("'fisher' (gradient | kl_div)"));
  EXPECT_THAT(ParseExportFormat("gguf").status().message(), HasSubstr("'gguf' (modelopt | compressed-tensors)"));
  EXPECT_THAT(ParseExportLayout("flat").status().message(), HasSubstr("'flat' (shared | standalone)"));
  EXPECT_EQ(ParsePhase("distill").status().code(), absl::StatusCode::kInvalidArgument);
}

SchemeSpec Coverage(double c) {
  SchemeSpec s;
  s.scheme = "top";
  s.selection.coverage = c;
  return s;
}

TEST(ValidateSchemeSpecTest, ExactlyOneSelectionInItsRange) {
  ASSERT_OK(ValidateSchemeSpec(Coverage(0.5)));
  ASSERT_OK(ValidateSchemeSpec(Coverage(1)));
  for (double bad : {0.0, -0.1, 1.0000001, std::nan(""), std::numeric_limits<double>::infinity()}) {
    absl::Status st = ValidateSchemeSpec(Coverage(bad));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(st.message(), HasSubstr("coverage")) << bad;
  }
  SchemeSpec none;
  none.scheme = "none";
  EXPECT_THAT(ValidateSchemeSpec(none).message(), HasSubstr("no selection given"));
  SchemeSpec two = Coverage(0.5);
  two.selection.coverage_manifest.emplace();
  EXPECT_THAT(ValidateSchemeSpec(two).message(), HasSubstr("more than one selection given"));
  SchemeSpec bits;
  bits.selection.effective_bits = 12;
  ASSERT_OK(ValidateSchemeSpec(bits));  // the CLI's scheme name defaults to the output directory's
  for (double bad : {0.0, 16.0, std::nan("")}) {
    bits.selection.effective_bits = bad;
    EXPECT_THAT(ValidateSchemeSpec(bits).message(), HasSubstr("effective_bits")) << bad;
  }
}

// One wording for every caller (CLI, service, store): fields as the API names them, never a CLI flag.
TEST(ValidateSchemeSpecTest, MessagesNameTheFieldNotAFlag) {
  SchemeSpec none;
  const std::string m(ValidateSchemeSpec(none).message());
  EXPECT_THAT(m, HasSubstr("coverage_manifest"));
  EXPECT_THAT(m, HasSubstr("effective_bits"));
  EXPECT_THAT(m, Not(HasSubstr("--")));
  SchemeSpec steps = Coverage(0.5);
  steps.calib_steps = -1;
  EXPECT_THAT(ValidateSchemeSpec(steps).message(), HasSubstr("calib_steps -1"));
  SchemeSpec batch = Coverage(0.5);
  batch.batch_size = -3;
  EXPECT_THAT(ValidateSchemeSpec(batch).message(), HasSubstr("batch_size -3"));
  SchemeSpec name = Coverage(0.5);
  name.scheme = "../up";
  absl::Status st = ValidateSchemeSpec(name);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("scheme: "));
}

TEST(SchemeSpecJsonTest, RoundTripsEveryFieldAndOmitsUnsetLayoutAndBatch) {
  SchemeSpec s;
  s.scheme = "kl";
  s.selection.coverage_manifest =
      CoverageManifest{.selected_layers = {"a"}, .dropped_layers = {"b"}, .disabled_layers = {"c*"}};
  s.selection.disabled_layers = {"*visual*"};
  s.method = ScoreMethod::kKlDiv;
  s.format = ExportFormat::kModelOpt;
  s.calib_steps = 3;
  s.score_steps = 4;
  s.include_vision = true;
  s.overwrite = true;
  nlohmann::json j;
  SchemeSpecToJson(s, &j);
  EXPECT_FALSE(j.contains("layout"));  // specs stored before layouts existed read the same
  EXPECT_FALSE(j.contains("batch_size"));
  EXPECT_EQ(j.at("method"), "kl_div");
  EXPECT_EQ(j.at("format"), "modelopt");
  ASSERT_OK_AND_ASSIGN(SchemeSpec back, SchemeSpecFromJson(j));
  EXPECT_EQ(back, s);
  s.layout = ExportLayout::kShared;
  s.batch_size = 2;
  j = nlohmann::json::object();
  SchemeSpecToJson(s, &j);
  EXPECT_EQ(j.at("layout"), "shared");
  ASSERT_OK_AND_ASSIGN(back, SchemeSpecFromJson(j));
  EXPECT_EQ(back, s);
  j["format"] = "gguf";
  EXPECT_EQ(SchemeSpecFromJson(j).status().code(), absl::StatusCode::kDataLoss);
}

TEST(SchemeSpecJsonTest, FormatsRoundTripAndAreOmittedWhenDefault) {
  SchemeSpec s;
  s.scheme = "mixed";
  s.selection.effective_bits = 6;
  nlohmann::json j;
  SchemeSpecToJson(s, &j);
  EXPECT_FALSE(j.contains("formats"));  // FP8-only specs store what they always stored
  s.formats = {Format::kFp8, Format::kNvfp4};
  j = nlohmann::json::object();
  SchemeSpecToJson(s, &j);
  EXPECT_EQ(j.at("formats"), nlohmann::json({"FP8", "NVFP4"}));
  ASSERT_OK_AND_ASSIGN(SchemeSpec back, SchemeSpecFromJson(j));
  EXPECT_EQ(back, s);
  j["formats"] = {"INT4"};
  EXPECT_EQ(SchemeSpecFromJson(j).status().code(), absl::StatusCode::kDataLoss);
}

TEST(ValidateSchemeSpecTest, FormatsAreDistinctQuantizedAndSeveralOnlyWithEffectiveBits) {
  SchemeSpec s;
  s.selection.coverage = 0.5;
  s.formats = {Format::kNvfp4};
  ASSERT_OK(ValidateSchemeSpec(s));  // one format: a coverage means "that format"
  s.formats = {Format::kNvfp4, Format::kFp8};
  absl::Status st = ValidateSchemeSpec(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("effective_bits"));
  s.selection.coverage.reset();
  s.selection.effective_bits = 6;
  ASSERT_OK(ValidateSchemeSpec(s));
  s.formats = {Format::kFp8, Format::kFp8};
  st = ValidateSchemeSpec(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("formats: formats lists FP8 twice"));
  s.formats = {Format::kNone};
  EXPECT_EQ(ValidateSchemeSpec(s).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace autoquant
