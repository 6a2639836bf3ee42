#include "core/jobs/request_limits.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace autoquant {
namespace {
using ::testing::AllOf;
using ::testing::HasSubstr;

JobSpec Coverage(const std::string& scheme) {
  JobSpec s;
  s.scheme = scheme;
  s.selection.coverage = 0.5;
  return s;
}

// Every list of a spec at its count limit, within the spec's text budget.
JobSpec AtTheLimits() {
  JobSpec s = Coverage("at-the-limits");
  s.selection.coverage.reset();
  s.selection.coverage_manifest.emplace();
  // The two pattern lists fill the pattern budget, the two key lists the rest of the spec's.
  const size_t pattern_length = kMaxPatternBytes / (2 * kMaxListEntries);
  const size_t key_length = (kMaxSpecTextBytes - kMaxPatternBytes - s.scheme.size()) / (2 * kMaxListEntries);
  auto entries = [&](const std::string& tag, size_t length) {
    std::vector<std::string> v;
    for (size_t i = 0; i < kMaxListEntries; ++i) {
      std::string e = absl::StrCat(tag, i, "*");
      e.resize(length, 'x');
      v.push_back(e);
    }
    return v;
  };
  s.selection.disabled_layers = entries("a", pattern_length);
  s.selection.coverage_manifest->disabled_layers = entries("m", pattern_length);
  s.selection.coverage_manifest->selected_layers = entries("s", key_length);
  s.selection.coverage_manifest->dropped_layers = entries("d", key_length);
  return s;
}

TEST(RequestLimitsTest, APlainSpecPasses) { EXPECT_TRUE(CheckSubmitLimits({Coverage("top10")}, "key-1").ok()); }

TEST(RequestLimitsTest, ASpecAtEveryLimitPassesAndStaysSmallWhenStored) {
  JobSpec s = AtTheLimits();
  ASSERT_TRUE(CheckSubmitLimits({s}, std::string(kMaxIdempotencyKeyLength, 'k')).ok()) << CheckSubmitLimits({s}, "");
  // What the store keeps: under 400 KiB, so a ListJobs reply of 3 MiB holds several.
  EXPECT_LT(s.ToJson().dump().size(), 400u << 10);
}

TEST(RequestLimitsTest, TooManyPatternsNameTheFieldTheLimitAndTheCount) {
  JobSpec s = Coverage("many");
  s.selection.disabled_layers.assign(40000, "*mlp*");
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status st = CheckSubmitLimits({s}, "");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(200));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), AllOf(HasSubstr("disabled_layers"), HasSubstr("40000"), HasSubstr("4096")));
}

TEST(RequestLimitsTest, TooManyFormatsAreRefusedBeforeAnythingElse) {
  JobSpec s = Coverage("many");
  s.formats.assign(kMaxFormats + 1, Format::kFp8);
  absl::Status st = CheckSubmitLimits({s}, "");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(),
              HasSubstr(absl::StrCat("formats has ", kMaxFormats + 1, " entries; at most ", kMaxFormats)));
  s.formats.assign(kMaxFormats, Format::kFp8);  // the count passes; ValidateSchemeSpec refuses the repeats
  EXPECT_TRUE(CheckSubmitLimits({s}, "").ok());
}

TEST(RequestLimitsTest, EveryListOfTheManifestIsCounted) {
  for (auto member :
       {&CoverageManifest::selected_layers, &CoverageManifest::dropped_layers, &CoverageManifest::disabled_layers}) {
    JobSpec s = Coverage("m");
    s.selection.coverage.reset();
    (s.selection.coverage_manifest.emplace().*member).assign(kMaxListEntries + 1, "k");
    absl::Status st = CheckSubmitLimits({s}, "");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(st.message(), AllOf(HasSubstr("coverage_manifest."), HasSubstr("4097")));
  }
}

TEST(RequestLimitsTest, ALongEntryIsNamedByItsIndex) {
  JobSpec s = Coverage("long");
  s.selection.disabled_layers = {"*a*", std::string(kMaxEntryLength + 1, 'x')};
  absl::Status st = CheckSubmitLimits({s}, "");
  EXPECT_THAT(st.message(), AllOf(HasSubstr("disabled_layers[1]"), HasSubstr("257"), HasSubstr("256")));
}

TEST(RequestLimitsTest, PatternBytesTogetherAreBounded) {
  JobSpec s = Coverage("bytes");
  s.selection.disabled_layers.assign(300, std::string(kMaxEntryLength, '*'));  // 75 KiB, each entry within limits
  absl::Status st = CheckSubmitLimits({s}, "");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), AllOf(HasSubstr("bytes of patterns"), HasSubstr(absl::StrCat(kMaxPatternBytes))));
}

TEST(RequestLimitsTest, ControlCharactersAreRefused) {
  JobSpec s = Coverage("ctl");
  s.selection.disabled_layers = {"*mlp*\n"};
  EXPECT_THAT(CheckSubmitLimits({s}, "").message(), AllOf(HasSubstr("disabled_layers[0]"), HasSubstr("0x0a")));
}

TEST(RequestLimitsTest, SweepFieldsAreNamedByPoint) {
  std::vector<JobSpec> points = {Coverage("a"), Coverage("b")};
  points[1].selection.disabled_layers.assign(kMaxListEntries + 1, "*");
  EXPECT_THAT(CheckSubmitLimits(points, "").message(), HasSubstr("points[1].disabled_layers"));
  std::vector<JobSpec> many(kMaxSweepPoints + 1, Coverage("p"));
  EXPECT_THAT(CheckSubmitLimits(many, "").message(), AllOf(HasSubstr("points"), HasSubstr("1001")));
}

TEST(RequestLimitsTest, ASweepsTextTogetherIsBounded) {
  // Each point well within its own limits; together over the sweep's.
  std::vector<JobSpec> points;
  for (int i = 0; i < 200; ++i) {
    JobSpec s = Coverage(absl::StrCat("p", i));
    s.selection.disabled_layers.assign(60, std::string(200, '*'));  // 12 KB each, 2.4 MB in all
    points.push_back(s);
  }
  absl::Status st = CheckSubmitLimits(points, "");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), AllOf(HasSubstr("per sweep"), HasSubstr(absl::StrCat(kMaxSweepTextBytes))));
}

TEST(RequestLimitsTest, IdempotencyKeyLength) {
  absl::Status st = CheckSubmitLimits({Coverage("k")}, std::string(129, 'k'));
  EXPECT_THAT(st.message(), AllOf(HasSubstr("idempotency_key"), HasSubstr("129"), HasSubstr("128")));
}

TEST(RequestLimitsTest, SchemeNamesThatReadAsOptionsAreRefused) {
  absl::Status st = CheckSubmitLimits({Coverage("--overwrite")}, "");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), AllOf(HasSubstr("scheme"), HasSubstr("starts with '-'")));
  JobSpec eval;
  eval.kind = JobKind::kEvaluate;
  eval.scheme = "-x";
  EXPECT_EQ(CheckSubmitLimits({eval}, "").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace autoquant
