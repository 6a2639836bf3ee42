// The wire <-> core conversions of the service: a SchemeSpec becomes the
// JobSpec the store keeps and back, jobs and log lines become their protos,
// and values the wire can carry but core cannot mean are refused with a
// message naming the field.
#include "server/job_proto.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

v1::SchemeSpec CoverageProto(double coverage) {
  v1::SchemeSpec p;
  p.set_scheme("top25");
  p.set_coverage(coverage);
  return p;
}

TEST(SpecFromProtoTest, CarriesEveryField) {
  v1::SchemeSpec p = CoverageProto(0.25);
  p.add_disabled_layers("*visual*");
  p.add_disabled_layers("lm_head");
  p.set_method(v1::SCORE_METHOD_KL_DIV);
  p.set_format(v1::EXPORT_FORMAT_MODELOPT);
  p.set_layout(v1::OUTPUT_LAYOUT_STANDALONE);
  p.set_overwrite(true);
  p.set_evaluate(true);
  p.set_include_vision(true);
  p.set_calib_steps(3);
  p.set_score_steps(4);
  p.set_batch_size(2);
  p.set_priority(-7);
  ASSERT_OK_AND_ASSIGN(JobSpec s, SpecFromProto(p));
  EXPECT_EQ(s.kind, JobKind::kScheme);
  EXPECT_EQ(s.scheme, "top25");
  ASSERT_TRUE(s.selection.coverage.has_value());
  EXPECT_DOUBLE_EQ(*s.selection.coverage, 0.25);
  EXPECT_FALSE(s.selection.coverage_manifest.has_value());
  EXPECT_THAT(s.selection.disabled_layers, ElementsAre("*visual*", "lm_head"));
  EXPECT_FALSE(s.selection.effective_bits.has_value());
  EXPECT_EQ(s.method, ScoreMethod::kKlDiv);
  EXPECT_EQ(s.format, ExportFormat::kModelOpt);
  EXPECT_EQ(s.layout, ExportLayout::kStandalone);
  EXPECT_TRUE(s.overwrite);
  EXPECT_TRUE(s.evaluate);
  EXPECT_TRUE(s.include_vision);
  EXPECT_EQ(s.calib_steps, 3);
  EXPECT_EQ(s.score_steps, 4);
  EXPECT_EQ(s.batch_size, 2);
  EXPECT_EQ(s.priority, -7);
}

TEST(SpecFromProtoTest, CoverageManifestFillsTheManifestListsAndNoCoverage) {
  v1::SchemeSpec p;
  p.set_scheme("from-seed");
  auto* m = p.mutable_coverage_manifest();
  m->add_selected_layers("language_model.layers.1.mlp.down_proj.quant_recipe");
  m->add_selected_layers("language_model.layers.3.mlp.down_proj.quant_recipe");
  m->add_dropped_layers("language_model.layers.0.mlp.down_proj.quant_recipe");
  m->add_disabled_layers("*layers.0.*");
  p.set_effective_bits(12.5);
  ASSERT_OK_AND_ASSIGN(JobSpec s, SpecFromProto(p));
  EXPECT_TRUE(s.selection.coverage_manifest.has_value());
  EXPECT_FALSE(s.selection.coverage.has_value());
  EXPECT_THAT(s.selection.coverage_manifest->selected_layers,
              ElementsAre("language_model.layers.1.mlp.down_proj.quant_recipe",
                          "language_model.layers.3.mlp.down_proj.quant_recipe"));
  EXPECT_THAT(s.selection.coverage_manifest->dropped_layers,
              ElementsAre("language_model.layers.0.mlp.down_proj.quant_recipe"));
  EXPECT_THAT(s.selection.coverage_manifest->disabled_layers, ElementsAre("*layers.0.*"));
  ASSERT_TRUE(s.selection.effective_bits.has_value());
  EXPECT_DOUBLE_EQ(*s.selection.effective_bits, 12.5);
}

// Unset enums mean the documented defaults; an unset layout stays "" (the
// daemon's --layout), and no selection stays no selection (the engine refuses it).
TEST(SpecFromProtoTest, UnspecifiedValuesTakeTheDefaults) {
  v1::SchemeSpec p;
  p.set_scheme("bare");
  ASSERT_OK_AND_ASSIGN(JobSpec s, SpecFromProto(p));
  EXPECT_EQ(s.method, ScoreMethod::kGradient);
  EXPECT_EQ(s.format, ExportFormat::kCompressedTensors);
  EXPECT_FALSE(s.layout.has_value());
  EXPECT_FALSE(s.selection.coverage.has_value());
  EXPECT_FALSE(s.selection.coverage_manifest.has_value());
  EXPECT_FALSE(s.selection.effective_bits.has_value());
  EXPECT_FALSE(s.evaluate);
  EXPECT_EQ(s.batch_size, 0);
}

TEST(SpecFromProtoTest, MapsEveryEnumValue) {
  struct MethodCase {
    v1::ScoreMethod wire;
    ScoreMethod core;
  };
  for (const MethodCase& c : {MethodCase{v1::SCORE_METHOD_UNSPECIFIED, ScoreMethod::kGradient},
                              MethodCase{v1::SCORE_METHOD_GRADIENT, ScoreMethod::kGradient},
                              MethodCase{v1::SCORE_METHOD_KL_DIV, ScoreMethod::kKlDiv}}) {
    v1::SchemeSpec p = CoverageProto(0.5);
    p.set_method(c.wire);
    ASSERT_OK_AND_ASSIGN(JobSpec s, SpecFromProto(p));
    EXPECT_EQ(s.method, c.core) << v1::ScoreMethod_Name(c.wire);
  }
  struct FormatCase {
    v1::ExportFormat wire;
    ExportFormat core;
  };
  for (const FormatCase& c : {FormatCase{v1::EXPORT_FORMAT_UNSPECIFIED, ExportFormat::kCompressedTensors},
                              FormatCase{v1::EXPORT_FORMAT_COMPRESSED_TENSORS, ExportFormat::kCompressedTensors},
                              FormatCase{v1::EXPORT_FORMAT_MODELOPT, ExportFormat::kModelOpt}}) {
    v1::SchemeSpec p = CoverageProto(0.5);
    p.set_format(c.wire);
    ASSERT_OK_AND_ASSIGN(JobSpec s, SpecFromProto(p));
    EXPECT_EQ(s.format, c.core) << v1::ExportFormat_Name(c.wire);
  }
  struct LayoutCase {
    v1::OutputLayout wire;
    std::optional<ExportLayout> core;
  };
  for (const LayoutCase& c : {LayoutCase{v1::OUTPUT_LAYOUT_UNSPECIFIED, std::nullopt},
                              LayoutCase{v1::OUTPUT_LAYOUT_SHARED, ExportLayout::kShared},
                              LayoutCase{v1::OUTPUT_LAYOUT_STANDALONE, ExportLayout::kStandalone}}) {
    v1::SchemeSpec p = CoverageProto(0.5);
    p.set_layout(c.wire);
    ASSERT_OK_AND_ASSIGN(JobSpec s, SpecFromProto(p));
    EXPECT_EQ(s.layout, c.core) << v1::OutputLayout_Name(c.wire);
  }
}

// The wire's values arrive as sent; the one spec validation (scheme_spec.h, applied at submit) refuses them.
TEST(SpecFromProtoTest, CoverageOutsideZeroToOneArrivesAndValidationRefusesIt) {
  for (double ok : {1e-9, 0.5, 1.0}) {
    auto s = SpecFromProto(CoverageProto(ok));
    ASSERT_TRUE(s.ok()) << ok << ": " << s.status();
    EXPECT_DOUBLE_EQ(*s->selection.coverage, ok);
    ASSERT_OK(ValidateSchemeSpec(*s));
  }
  for (double bad : {0.0, -0.1, 1.0000001, 10.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    ASSERT_OK_AND_ASSIGN(JobSpec s, SpecFromProto(CoverageProto(bad)));
    absl::Status st = ValidateSchemeSpec(s);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(st.message(), HasSubstr("coverage")) << bad;
    EXPECT_THAT(st.message(), HasSubstr("(0, 1]")) << bad;
  }
}

TEST(SpecFromProtoTest, NonFiniteEffectiveBitsAreRefusedNamingTheField) {
  for (double bad : {std::nan(""), std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
    v1::SchemeSpec p;
    p.set_scheme("bits");
    p.set_effective_bits(bad);
    ASSERT_OK_AND_ASSIGN(JobSpec s, SpecFromProto(p));
    absl::Status st = ValidateSchemeSpec(s);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(st.message(), HasSubstr("effective_bits")) << bad;
  }
}

// proto3 enums are open: a newer client can send a number this daemon does not know.
TEST(SpecFromProtoTest, UnknownEnumNumbersAreRefusedNamingTheField) {
  v1::SchemeSpec method = CoverageProto(0.5);
  method.set_method(static_cast<v1::ScoreMethod>(42));
  auto s = SpecFromProto(method);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("score method 42"));

  v1::SchemeSpec format = CoverageProto(0.5);
  format.set_format(static_cast<v1::ExportFormat>(43));
  s = SpecFromProto(format);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("export format 43"));

  v1::SchemeSpec layout = CoverageProto(0.5);
  layout.set_layout(static_cast<v1::OutputLayout>(44));
  s = SpecFromProto(layout);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("output layout 44"));

  for (int bad : {0, 45}) {  // UNSPECIFIED means nothing in a list
    v1::SchemeSpec formats = CoverageProto(0.5);
    formats.add_formats(v1::QUANT_FORMAT_NVFP4);
    formats.add_formats(static_cast<v1::QuantFormat>(bad));
    s = SpecFromProto(formats);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.status().message(), HasSubstr(absl::StrCat("formats: unknown quantization format ", bad)));
  }
}

TEST(SpecToProtoTest, WritesEveryFieldAndTheEnums) {
  JobSpec s;
  s.scheme = "kl";
  s.selection.coverage = 0.75;
  s.selection.disabled_layers = {"*visual*"};
  s.selection.effective_bits = 14;
  s.method = ScoreMethod::kKlDiv;
  s.format = ExportFormat::kModelOpt;
  s.layout = ExportLayout::kShared;
  s.overwrite = true;
  s.include_vision = true;
  s.calib_steps = 5;
  s.score_steps = 6;
  s.batch_size = 3;
  s.priority = 9;
  s.evaluate = true;
  v1::SchemeSpec p;
  SpecToProto(s, &p);
  EXPECT_EQ(p.scheme(), "kl");
  EXPECT_EQ(p.selection_case(), v1::SchemeSpec::kCoverage);
  EXPECT_DOUBLE_EQ(p.coverage(), 0.75);
  EXPECT_THAT(p.disabled_layers(), ElementsAre("*visual*"));
  ASSERT_TRUE(p.has_effective_bits());
  EXPECT_DOUBLE_EQ(p.effective_bits(), 14);
  EXPECT_EQ(p.method(), v1::SCORE_METHOD_KL_DIV);
  EXPECT_EQ(p.format(), v1::EXPORT_FORMAT_MODELOPT);
  EXPECT_EQ(p.layout(), v1::OUTPUT_LAYOUT_SHARED);
  EXPECT_TRUE(p.overwrite());
  EXPECT_TRUE(p.include_vision());
  EXPECT_EQ(p.calib_steps(), 5);
  EXPECT_EQ(p.score_steps(), 6);
  EXPECT_EQ(p.batch_size(), 3);
  EXPECT_EQ(p.priority(), 9);
  EXPECT_TRUE(p.evaluate());

  JobSpec defaults;
  defaults.scheme = "d";
  v1::SchemeSpec q;
  SpecToProto(defaults, &q);
  EXPECT_EQ(q.selection_case(), v1::SchemeSpec::SELECTION_NOT_SET);
  EXPECT_FALSE(q.has_effective_bits());
  EXPECT_EQ(q.method(), v1::SCORE_METHOD_GRADIENT);
  EXPECT_EQ(q.format(), v1::EXPORT_FORMAT_COMPRESSED_TENSORS);
  EXPECT_EQ(q.layout(), v1::OUTPUT_LAYOUT_UNSPECIFIED);
  defaults.layout = ExportLayout::kStandalone;
  SpecToProto(defaults, &q);
  EXPECT_EQ(q.layout(), v1::OUTPUT_LAYOUT_STANDALONE);
}

// What the store keeps comes back unchanged through the wire, whichever
// selection it holds: the service's GetStatus shows the job as submitted.
TEST(SpecRoundTripTest, JobSpecSurvivesTheWireBothWays) {
  JobSpec coverage;
  coverage.scheme = "top10";
  coverage.selection.coverage = 0.1;
  coverage.selection.disabled_layers = {"lm_head", "*layers.0.*"};
  coverage.method = ScoreMethod::kKlDiv;
  coverage.layout = ExportLayout::kStandalone;
  coverage.calib_steps = 2;
  coverage.batch_size = 4;
  coverage.priority = 3;

  JobSpec manifest;
  manifest.scheme = "seeded";
  manifest.selection.coverage_manifest.emplace();
  manifest.selection.coverage_manifest->selected_layers = {"a.quant_recipe"};
  manifest.selection.coverage_manifest->dropped_layers = {"b.quant_recipe", "c.quant_recipe"};
  manifest.selection.coverage_manifest->disabled_layers = {"c*"};
  manifest.format = ExportFormat::kModelOpt;
  manifest.evaluate = true;

  JobSpec bits;
  bits.scheme = "bits12";
  bits.selection.effective_bits = 12;
  bits.layout = ExportLayout::kShared;
  bits.include_vision = true;
  bits.overwrite = true;
  bits.score_steps = 7;
  bits.formats = {Format::kNvfp4, Format::kFp8, Format::kNvfp4W4A16};

  for (const JobSpec& original : {coverage, manifest, bits}) {
    SCOPED_TRACE(original.scheme);
    v1::SchemeSpec p;
    SpecToProto(original, &p);
    ASSERT_OK_AND_ASSIGN(JobSpec back, SpecFromProto(p));
    EXPECT_EQ(back, original) << back.ToJson().dump() << "\n" << original.ToJson().dump();
    v1::SchemeSpec again;
    SpecToProto(back, &again);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(p, again)) << p.ShortDebugString() << "\n"
                                                                              << again.ShortDebugString();
  }
}

TEST(StateProtoTest, EveryStateMapsBothWays) {
  const std::pair<JobState, v1::JobState> states[] = {
      {JobState::kQueued, v1::JOB_STATE_QUEUED},       {JobState::kRunning, v1::JOB_STATE_RUNNING},
      {JobState::kSucceeded, v1::JOB_STATE_SUCCEEDED}, {JobState::kFailed, v1::JOB_STATE_FAILED},
      {JobState::kCancelled, v1::JOB_STATE_CANCELLED},
  };
  for (const auto& [core, wire] : states) {
    SCOPED_TRACE(std::string(JobStateName(core)));
    EXPECT_EQ(StateToProto(core), wire);
    ASSERT_OK_AND_ASSIGN(JobState back, StateFromProto(wire));
    EXPECT_EQ(back, core);
  }
}

// ListJobs' `states` filter: UNSPECIFIED or an unknown number is not a state.
TEST(StateProtoTest, UnspecifiedOrUnknownStateIsRefusedNamingTheFilter) {
  for (v1::JobState bad : {v1::JOB_STATE_UNSPECIFIED, static_cast<v1::JobState>(99)}) {
    auto s = StateFromProto(bad);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.status().message(), HasSubstr("states"));
    EXPECT_THAT(s.status().message(), HasSubstr(std::to_string(static_cast<int>(bad))));
  }
}

TEST(PhaseProtoTest, EveryEnginePhaseHasItsEnumAndNoneIsUnspecified) {
  EXPECT_EQ(PhaseToProto(Phase::kLoad), v1::PHASE_LOAD);
  EXPECT_EQ(PhaseToProto(Phase::kCalibrate), v1::PHASE_CALIBRATE);
  EXPECT_EQ(PhaseToProto(Phase::kScore), v1::PHASE_SCORE);
  EXPECT_EQ(PhaseToProto(Phase::kSearch), v1::PHASE_SEARCH);
  EXPECT_EQ(PhaseToProto(Phase::kExport), v1::PHASE_EXPORT);
  EXPECT_EQ(PhaseToProto(Phase::kEvaluate), v1::PHASE_EVALUATE);
  EXPECT_EQ(PhaseToProto(std::nullopt), v1::PHASE_UNSPECIFIED);
  // A stored name this version does not know reads as no phase (job.h's PhaseFromStore).
  EXPECT_EQ(PhaseToProto(PhaseFromStore("exporting")), v1::PHASE_UNSPECIFIED);
  EXPECT_EQ(PhaseToProto(PhaseFromStore("export")), v1::PHASE_EXPORT);
}

Job FinishedJob() {
  Job j;
  j.id = "j-0123456789abcdef";
  j.idempotency_key = "key-1";
  j.sweep_id = "s-1";
  j.spec.scheme = "top50";
  j.spec.selection.coverage = 0.5;
  j.spec.method = ScoreMethod::kKlDiv;
  j.state = JobState::kSucceeded;
  j.phase = Phase::kExport;
  j.progress = 1;
  j.message = "done";
  j.created_ms = 1700000000123;
  j.started_ms = 1700000001000;
  j.finished_ms = 1700000002999;
  j.attempts = 2;
  j.owner = "gpu-node-3-4242-9f1c";
  JobResultInfo r;
  r.output_dir = "/models/top50";
  r.effective_bits = 12.25;
  r.groups_quantized = 7;
  r.groups_total = 14;
  r.baseline_reused = true;
  r.baseline_key = "abc";
  r.metrics = {{"export_bytes", 1024}, {"export_seconds", 1.5}};
  j.result = r;
  return j;
}

TEST(JobToProtoTest, CopiesTheJobItsResultAndTimes) {
  v1::Job p;
  JobToProto(FinishedJob(), 0, &p);
  EXPECT_EQ(p.id(), "j-0123456789abcdef");
  EXPECT_EQ(p.scheme(), "top50");
  EXPECT_EQ(p.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(p.phase(), v1::PHASE_EXPORT);
  EXPECT_DOUBLE_EQ(p.progress(), 1);
  EXPECT_EQ(p.message(), "done");
  EXPECT_EQ(p.created_at().seconds(), 1700000000);
  EXPECT_EQ(p.created_at().nanos(), 123000000);
  EXPECT_EQ(p.started_at().seconds(), 1700000001);
  EXPECT_EQ(p.started_at().nanos(), 0);
  EXPECT_EQ(p.finished_at().seconds(), 1700000002);
  EXPECT_EQ(p.finished_at().nanos(), 999000000);
  ASSERT_TRUE(p.has_result());
  EXPECT_EQ(p.result().output_dir(), "/models/top50");
  EXPECT_DOUBLE_EQ(p.result().effective_bits(), 12.25);
  EXPECT_EQ(p.result().groups_quantized(), 7);
  EXPECT_EQ(p.result().groups_total(), 14);
  EXPECT_EQ(p.result().baseline_key(), "abc");
  EXPECT_THAT(p.result().metrics(), UnorderedElementsAre(Pair("export_bytes", 1024.0), Pair("export_seconds", 1.5)));
  EXPECT_TRUE(p.baseline_reused());
  EXPECT_EQ(p.queue_position(), 0);
  EXPECT_EQ(p.spec().scheme(), "top50");
  EXPECT_DOUBLE_EQ(p.spec().coverage(), 0.5);
  EXPECT_EQ(p.spec().method(), v1::SCORE_METHOD_KL_DIV);
  EXPECT_EQ(p.idempotency_key(), "key-1");
  EXPECT_EQ(p.sweep_id(), "s-1");
  EXPECT_EQ(p.attempts(), 2);
  EXPECT_EQ(p.daemon_id(), "gpu-node-3-4242-9f1c");
  EXPECT_EQ(p.kind(), v1::JOB_KIND_SCHEME);
}

// A queued job has no start, end or result yet: those stay unset on the wire
// rather than reading as 1970.
TEST(JobToProtoTest, QueuedJobHasItsPositionAndNoUnsetTimesOrResult) {
  Job j;
  j.id = "j-1";
  j.spec.scheme = "eval-me";
  j.spec.kind = JobKind::kEvaluate;
  j.created_ms = 5000;
  v1::Job p;
  JobToProto(j, 3, &p);
  EXPECT_EQ(p.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(p.phase(), v1::PHASE_UNSPECIFIED);
  EXPECT_EQ(p.queue_position(), 3);
  EXPECT_TRUE(p.has_created_at());
  EXPECT_EQ(p.created_at().seconds(), 5);
  EXPECT_FALSE(p.has_started_at());
  EXPECT_FALSE(p.has_finished_at());
  EXPECT_FALSE(p.has_result());
  EXPECT_FALSE(p.baseline_reused());
  EXPECT_EQ(p.kind(), v1::JOB_KIND_EVALUATE);
}

TEST(LogToProtoTest, CopiesTheLineAndSetsTheStateOnlyOnTerminalLines) {
  LogEntry e;
  e.sequence = 17;
  e.time_ms = 1700000000500;
  e.level = "warning";
  e.message = "baseline cache unwritable";
  e.phase = Phase::kScore;
  e.progress = 0.4;
  v1::LogLine p;
  LogToProto(e, &p);
  EXPECT_EQ(p.sequence(), 17);
  EXPECT_EQ(p.time().seconds(), 1700000000);
  EXPECT_EQ(p.time().nanos(), 500000000);
  EXPECT_EQ(p.level(), "warning");
  EXPECT_EQ(p.message(), "baseline cache unwritable");
  EXPECT_EQ(p.phase(), v1::PHASE_SCORE);
  EXPECT_DOUBLE_EQ(p.progress(), 0.4);
  EXPECT_EQ(p.state(), v1::JOB_STATE_UNSPECIFIED);

  e.state = JobState::kFailed;
  e.phase.reset();
  v1::LogLine last;
  LogToProto(e, &last);
  EXPECT_EQ(last.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(last.phase(), v1::PHASE_UNSPECIFIED);
}

}  // namespace
}  // namespace autoquant
