#include "core/eval/report.h"

#include <cmath>
#include <fstream>

#include "core/util/file_util.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ojson = nlohmann::ordered_json;

// The numbers of one fake evaluated scheme.
struct FakeScheme {
  std::string name;
  double coverage = 0.5;
  double bits = 12;
  int quantized = 4, total = 8;
  double delta = 0.3, delta_lo = 0.1, delta_hi = 0.5;
  double mse = 0.02, mse_lo = 0.01, mse_hi = 0.03;
  double kl = 0.001, kl_lo = 0.0005, kl_hi = 0.0015;
  std::vector<double> sample_kl = {0.001, 0.002};
  std::string eval_fingerprint = "e0e0e0e0e0e0e0e0";
  std::string base_fingerprint = "b0b0b0b0b0b0b0b0";
  std::map<std::string, std::string> digests = {{"a.weight", "aa"}, {"b.weight", "bb"}};
  bool all_finite = true;
  std::vector<std::string> formats;             // scheme_info.formats; empty: absent (older evaluations)
  std::map<std::string, int> groups_by_format;  // scheme_info.groups_by_format
};

ojson EvaluationJsonWithoutFormats(const FakeScheme& s);

ojson EvaluationJson(const FakeScheme& s) {
  ojson j = EvaluationJsonWithoutFormats(s);
  if (!s.formats.empty()) {
    j["scheme_info"]["formats"] = s.formats;
    j["scheme_info"]["groups_by_format"] = ojson::object();
    for (const auto& [f, n] : s.groups_by_format) j["scheme_info"]["groups_by_format"][f] = n;
  }
  return j;
}

ojson EvaluationJsonWithoutFormats(const FakeScheme& s) {
  ojson per_sample = ojson::array();
  for (size_t i = 0; i < s.sample_kl.size(); ++i) {
    per_sample.push_back({{"index", i},
                          {"has_images", true},
                          {"tokens", 100},
                          {"nll_base", 200.0 + i},
                          {"nll_scheme", 200.0 + i + s.sample_kl[i]},
                          {"logit_mse_last_token", s.mse},
                          {"logit_kl_last_token", s.sample_kl[i]}});
  }
  return {{"format", "autoquant.evaluation.v1"},
          {"scheme", s.name},
          {"producer", {{"name", "autoquant"}, {"version", "0.1.0"}}},
          {"base_model_fingerprint", s.base_fingerprint},
          {"eval_set",
           {{"path", "/data/eval.safetensors"},
            {"fingerprint", s.eval_fingerprint},
            {"samples", 2},
            {"samples_with_images", 2}}},
          {"scheme_info",
           {{"coverage", s.coverage},
            {"coverage_requested", true},
            {"effective_bits", s.bits},
            {"groups_quantized", s.quantized},
            {"groups_total", s.total},
            {"quantized_linears", 10}}},
          {"summary",
           {{"perplexity",
             {{"base", 12.0},
              {"scheme", 12.0 + s.delta},
              {"delta", s.delta},
              {"delta_ci95", {s.delta_lo, s.delta_hi}},
              {"tokens", 200},
              {"samples", 2}}},
            {"logit_mse_last_token",
             {{"mean", s.mse}, {"ci95", {s.mse_lo, s.mse_hi}}, {"samples", 2}, {"over", "samples_with_images"}}},
            {"logit_kl_last_token",
             {{"mean", s.kl}, {"ci95", {s.kl_lo, s.kl_hi}}, {"samples", 2}, {"over", "samples_with_images"}}}}},
          {"per_sample", per_sample},
          {"generation",
           {{"max_new_tokens", 16},
            {"all_finite", s.all_finite},
            {"mean_agreement", 14.5},
            {"base_tokens_per_second", 40.0},
            {"scheme_tokens_per_second", 42.0},
            {"prompts",
             {{{"index", 1},
               {"has_images", false},
               {"prompt_tokens", 8},
               {"base_tokens", {1, 2}},
               {"scheme_tokens", {1, 2}},
               {"agreement", 2},
               {"finite", s.all_finite}}}}}},
          {"seconds", {{"metrics", 1.0}, {"generation", 0.5}}}};
}

ojson ManifestJson(const FakeScheme& s) {
  ojson tensors = ojson::object();
  for (const auto& [name, sha] : s.digests)
    tensors[name] = {{"file", "model-00001-of-00001.safetensors"}, {"sha256", sha}};
  return {{"scheme", s.name},
          {"producer", {{"name", "autoquant"}}},
          {"effective_bits", s.bits},
          {"coverage", s.coverage},
          {"num_groups", s.total},
          {"num_quantized", s.quantized},
          {"integrity", {{"algorithm", "sha256"}, {"tensors", tensors}}}};
}

class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = testing::TempDir(); }

  fs::path Write(const FakeScheme& s, const ojson& evaluation, const ojson& manifest) {
    const fs::path dir = root_ / s.name;
    fs::create_directories(dir / "layer-sensitivity");
    EXPECT_TRUE(WriteFileAtomic(dir / "layer-sensitivity" / "evaluation.json", evaluation.dump(2)).ok());
    EXPECT_TRUE(WriteFileAtomic(dir / "layer-sensitivity" / (s.name + "_quant_manifest.json"), manifest.dump(2)).ok());
    return dir;
  }
  fs::path Write(const FakeScheme& s) { return Write(s, EvaluationJson(s), ManifestJson(s)); }

  std::vector<ReportPoint> Read(const std::vector<FakeScheme>& schemes) {
    std::vector<ReportPoint> points;
    for (const FakeScheme& s : schemes) {
      auto p = ReadReportPoint(Write(s));
      EXPECT_TRUE(p.ok()) << p.status();
      if (p.ok()) points.push_back(*std::move(p));
    }
    return points;
  }

  // Three schemes whose metrics all grow with coverage, each with its own tensors.
  std::vector<FakeScheme> Monotone() {
    FakeScheme a{.name = "top10",
                 .coverage = 0.1,
                 .bits = 15,
                 .quantized = 1,
                 .delta = 0.1,
                 .delta_lo = 0.05,
                 .delta_hi = 0.15,
                 .mse = 0.01,
                 .mse_lo = 0.005,
                 .mse_hi = 0.015,
                 .kl = 0.001,
                 .kl_lo = 0.0008,
                 .kl_hi = 0.0012,
                 .sample_kl = {0.0009, 0.0011}};
    a.digests = {{"a.weight", "a1"}, {"b.weight", "b1"}};
    FakeScheme b{.name = "top50",
                 .coverage = 0.5,
                 .bits = 12,
                 .quantized = 4,
                 .delta = 0.3,
                 .delta_lo = 0.2,
                 .delta_hi = 0.4,
                 .mse = 0.02,
                 .mse_lo = 0.015,
                 .mse_hi = 0.025,
                 .kl = 0.002,
                 .kl_lo = 0.0015,
                 .kl_hi = 0.0025,
                 .sample_kl = {0.0019, 0.0021}};
    b.digests = {{"a.weight", "a2"}, {"b.weight", "b1"}};
    FakeScheme c{.name = "top100",
                 .coverage = 1.0,
                 .bits = 8,
                 .quantized = 8,
                 .delta = 0.9,
                 .delta_lo = 0.7,
                 .delta_hi = 1.1,
                 .mse = 0.05,
                 .mse_lo = 0.04,
                 .mse_hi = 0.06,
                 .kl = 0.005,
                 .kl_lo = 0.004,
                 .kl_hi = 0.006,
                 .sample_kl = {0.0049, 0.0051}};
    c.digests = {{"a.weight", "a2"}, {"b.weight", "b2"}};
    return {a, b, c};
  }

  fs::path root_;
};

TEST_F(ReportTest, ReadsEvaluationAndManifest) {
  FakeScheme s{.name = "top50"};
  ASSERT_OK_AND_ASSIGN(ReportPoint p, ReadReportPoint(Write(s)));
  EXPECT_EQ(p.scheme, "top50");
  EXPECT_DOUBLE_EQ(p.coverage, 0.5);
  EXPECT_DOUBLE_EQ(p.effective_bits, 12);
  EXPECT_EQ(p.groups_quantized, 4);
  EXPECT_EQ(p.groups_total, 8);
  EXPECT_DOUBLE_EQ(p.perplexity.delta_ci95_high, 0.5);
  EXPECT_DOUBLE_EQ(p.logit_kl_last_token.mean, 0.001);
  EXPECT_EQ(p.per_sample.size(), 2u);
  ASSERT_TRUE(p.generation.has_value());
  EXPECT_DOUBLE_EQ(p.generation->mean_agreement, 14.5);
  ASSERT_TRUE(p.digests.has_value());
  EXPECT_EQ(p.digests->at("b.weight").sha256, "bb");
  EXPECT_TRUE(p.dir.is_absolute());
}

TEST_F(ReportTest, MissingEvaluationIsNotFoundSayingHowToEvaluate) {
  const fs::path dir = root_ / "top30";
  fs::create_directories(dir / "layer-sensitivity");
  absl::StatusOr<ReportPoint> p = ReadReportPoint(dir);
  ASSERT_EQ(p.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(p.status().message(), HasSubstr("no evaluation.json in " + dir.string()));
  EXPECT_THAT(p.status().message(), HasSubstr("autoquant eval top30"));
  EXPECT_THAT(p.status().message(), HasSubstr("--evaluate"));
}

TEST_F(ReportTest, MissingManifestIsNotFound) {
  FakeScheme s{.name = "top50"};
  const fs::path dir = Write(s);
  fs::remove(dir / "layer-sensitivity" / "top50_quant_manifest.json");
  EXPECT_EQ(ReadReportPoint(dir).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ReportTest, MalformedFieldIsInvalidArgumentNamingFileAndField) {
  FakeScheme s{.name = "top50"};
  ojson e = EvaluationJson(s);
  e["summary"]["logit_kl_last_token"]["ci95"] = "wide";
  absl::StatusOr<ReportPoint> p = ReadReportPoint(Write(s, e, ManifestJson(s)));
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("evaluation.json"));
  EXPECT_THAT(p.status().message(), HasSubstr("summary.logit_kl_last_token.ci95"));

  e = EvaluationJson(s);
  e["per_sample"][1].erase("nll_scheme");
  p = ReadReportPoint(Write(s, e, ManifestJson(s)));
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("'per_sample[1].nll_scheme' is missing"));

  ojson m = ManifestJson(s);
  m["integrity"]["tensors"]["a.weight"].erase("sha256");
  p = ReadReportPoint(Write(s, EvaluationJson(s), m));
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("top50_quant_manifest.json"));
  EXPECT_THAT(p.status().message(), HasSubstr("integrity.tensors.a.weight.sha256"));
}

TEST_F(ReportTest, NotJsonAndWrongFormatAreInvalidArgument) {
  FakeScheme s{.name = "top50"};
  const fs::path dir = Write(s);
  ASSERT_OK(WriteFileAtomic(dir / "layer-sensitivity" / "evaluation.json", "{not json"));
  EXPECT_EQ(ReadReportPoint(dir).status().code(), absl::StatusCode::kInvalidArgument);
  ojson e = EvaluationJson(s);
  e["format"] = "autoquant.evaluation.v0";
  absl::StatusOr<ReportPoint> p = ReadReportPoint(Write(s, e, ManifestJson(s)));
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("'format'"));
}

TEST_F(ReportTest, NullMetricReadsAsNaN) {
  FakeScheme s{.name = "top50"};
  ojson e = EvaluationJson(s);
  e["summary"]["logit_kl_last_token"]["mean"] = nullptr;
  ASSERT_OK_AND_ASSIGN(ReportPoint p, ReadReportPoint(Write(s, e, ManifestJson(s))));
  EXPECT_TRUE(std::isnan(p.logit_kl_last_token.mean));
}

TEST_F(ReportTest, EvaluationOfAnotherExportIsStale) {
  FakeScheme s{.name = "top50"};
  ojson m = ManifestJson(s);
  m["effective_bits"] = 11.0;
  absl::StatusOr<ReportPoint> p = ReadReportPoint(Write(s, EvaluationJson(s), m));
  ASSERT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(p.status().message(), HasSubstr("stale"));
}

TEST_F(ReportTest, PointsAreSortedByCoverageAfterTheBase) {
  std::vector<FakeScheme> schemes = Monotone();
  std::swap(schemes[0], schemes[2]);
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(schemes)));
  EXPECT_EQ(r["format"], "autoquant.report.v1");
  EXPECT_EQ(r["base"]["scheme"], "base");
  EXPECT_EQ(r["base"]["coverage"], 0.0);
  EXPECT_EQ(r["base"]["effective_bits"], 16.0);
  EXPECT_EQ(r["base"]["perplexity"]["base"], 12.0);
  EXPECT_EQ(r["base"]["logit_kl_last_token"]["mean"], 0.0);
  ASSERT_EQ(r["points"].size(), 3u);
  EXPECT_EQ(r["points"][0]["scheme"], "top10");
  EXPECT_EQ(r["points"][1]["scheme"], "top50");
  EXPECT_EQ(r["points"][2]["scheme"], "top100");
  const ojson& top50 = r["points"][1];
  EXPECT_EQ(top50["effective_bits"], 12.0);
  EXPECT_EQ(top50["groups"]["quantized"], 4);
  EXPECT_EQ(top50["perplexity"]["delta"], 0.3);
  EXPECT_EQ(top50["perplexity"]["delta_ci95"], ojson({0.2, 0.4}));
  EXPECT_EQ(top50["logit_mse_last_token"]["ci95"], ojson({0.015, 0.025}));
  EXPECT_EQ(top50["logit_kl_last_token"]["mean"], 0.002);
  EXPECT_EQ(top50["generation"]["agreement"], 14.5);
  EXPECT_EQ(top50["generation"]["all_finite"], true);
  EXPECT_EQ(r["eval_set"]["samples"], 2);
}

TEST_F(ReportTest, MonotoneSweepHasNoFindings) {
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(Monotone())));
  for (const auto& [key, list] : r["findings"].items()) EXPECT_TRUE(list.empty()) << key << ": " << list.dump();
}

TEST_F(ReportTest, InversionBeyondNoiseIsFound) {
  std::vector<FakeScheme> s = Monotone();
  // top100 shows less KL than top50, with disjoint intervals.
  s[2].kl = 0.0012, s[2].kl_lo = 0.0011, s[2].kl_hi = 0.0013;
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(s)));
  const ojson& inv = r["findings"]["inversions"];
  ASSERT_EQ(inv.size(), 1u) << inv.dump(2);
  EXPECT_EQ(inv[0]["metric"], "logit_kl_last_token");
  EXPECT_EQ(inv[0]["more_coverage"]["scheme"], "top100");
  EXPECT_EQ(inv[0]["less_coverage"]["scheme"], "top50");
  EXPECT_EQ(inv[0]["within_noise"], false);
  EXPECT_THAT(inv[0]["message"].get<std::string>(), HasSubstr("do not overlap"));
}

TEST_F(ReportTest, InversionWithinNoiseSaysSo) {
  std::vector<FakeScheme> s = Monotone();
  // top50's perplexity delta dips below top10's, but the intervals overlap.
  s[1].delta = 0.09, s[1].delta_lo = 0.0, s[1].delta_hi = 0.2;
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(s)));
  const ojson& inv = r["findings"]["inversions"];
  ASSERT_EQ(inv.size(), 1u) << inv.dump(2);
  EXPECT_EQ(inv[0]["metric"], "perplexity_delta");
  EXPECT_EQ(inv[0]["more_coverage"]["scheme"], "top50");
  EXPECT_EQ(inv[0]["less_coverage"]["scheme"], "top10");
  EXPECT_EQ(inv[0]["within_noise"], true);
  EXPECT_THAT(inv[0]["message"].get<std::string>(), HasSubstr("within noise"));
}

TEST_F(ReportTest, EqualCoverageIsNoInversion) {
  std::vector<FakeScheme> s = Monotone();
  s[1].coverage = 0.1;  // same coverage as top10 (other effective bits), less KL
  s[1].kl = 0.0001, s[1].kl_lo = 0.00005, s[1].kl_hi = 0.00015;
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(s)));
  for (const ojson& f : r["findings"]["inversions"]) EXPECT_NE(f["less_coverage"]["scheme"], "top10") << f.dump();
}

// Schemes searched over NVFP4 + FP8 form their own curve: effective bits order them (their coverage is
// all 100 %), inversions are looked for within the set only, and the table shows groups per format.
TEST_F(ReportTest, FormatSetsAreSeparateCurvesOrderedByEffectiveBits) {
  std::vector<FakeScheme> s = Monotone();  // FP8 top10 / top50 / top100
  auto mixed = [](std::string name, double bits, int nvfp4, double kl) {
    return FakeScheme{.name = name,
                      .coverage = 1.0,
                      .bits = bits,
                      .quantized = 8,
                      .kl = kl,
                      .kl_lo = kl * 0.9,
                      .kl_hi = kl * 1.1,
                      .digests = {{"a.weight", name}},
                      .formats = {"NVFP4", "FP8"},
                      .groups_by_format = {{"NVFP4", nvfp4}, {"FP8", 8 - nvfp4}}};
  };
  // bits5 (more aggressive) degrades less than bits6: an inversion within the mixed set; neither is
  // compared with the FP8 points (bits5's KL is below every FP8 point's).
  s.push_back(mixed("bits5", 5.0, 7, 0.0001));
  s.push_back(mixed("bits6", 6.0, 5, 0.004));
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(s)));
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const ojson& f : r["findings"]["inversions"]) {
    pairs.emplace_back(f["more_coverage"]["scheme"], f["less_coverage"]["scheme"]);
  }
  EXPECT_THAT(pairs, Contains(std::make_pair(std::string("bits5"), std::string("bits6"))));
  for (const auto& [more, less] : pairs) {
    EXPECT_EQ(more.rfind("bits", 0) == 0, less.rfind("bits", 0) == 0) << more << " vs " << less;
  }
  for (const ojson& p : r["points"]) {
    EXPECT_EQ(p["formats"], p["scheme"].get<std::string>().rfind("bits", 0) == 0 ? "NVFP4+FP8" : "FP8");
  }
  const std::string md = ReportMarkdown(r);
  EXPECT_THAT(md, HasSubstr("| bits5 | 100 % | 5 | 7 NVFP4, 1 FP8 |"));
}

TEST_F(ReportTest, IdenticalDigestsAreFlagged) {
  std::vector<FakeScheme> s = Monotone();
  s[2].digests = s[0].digests;  // top100 holds top10's tensors
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(s)));
  const ojson& same = r["findings"]["identical_schemes"];
  ASSERT_EQ(same.size(), 1u) << same.dump(2);
  EXPECT_EQ(same[0]["basis"], "tensor_digests");
  EXPECT_EQ(same[0]["schemes"], ojson({"top10", "top100"}));
  EXPECT_THAT(same[0]["message"].get<std::string>(), HasSubstr("IDENTICAL SCHEMES"));
  EXPECT_THAT(ReportMarkdown(r), HasSubstr("**IDENTICAL SCHEMES: top10, top100"));
}

TEST_F(ReportTest, DigestsDifferingInOneTensorAreNotIdentical) {
  std::vector<FakeScheme> s = Monotone();
  s[2].digests = s[0].digests;
  s[2].digests["b.weight"] = "b-other";
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(s)));
  EXPECT_TRUE(r["findings"]["identical_schemes"].empty()) << r["findings"].dump(2);
}

TEST_F(ReportTest, WithoutDigestsEqualPerSampleNumbersAreFlagged) {
  std::vector<FakeScheme> s = Monotone();
  for (FakeScheme& f : s) f.digests.clear();
  s[1].sample_kl = s[0].sample_kl;
  s[1].mse = s[0].mse;
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(s)));
  const ojson& same = r["findings"]["identical_schemes"];
  ASSERT_EQ(same.size(), 1u) << same.dump(2);
  EXPECT_EQ(same[0]["basis"], "per_sample_numbers");
  EXPECT_EQ(same[0]["schemes"], ojson({"top10", "top50"}));
}

TEST_F(ReportTest, DifferentTensorsWithEqualNumbersAreFlagged) {
  std::vector<FakeScheme> s = Monotone();
  s[1].sample_kl = s[0].sample_kl;
  s[1].mse = s[0].mse;
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(s)));
  const ojson& same = r["findings"]["identical_schemes"];
  ASSERT_EQ(same.size(), 1u) << same.dump(2);
  EXPECT_THAT(same[0]["message"].get<std::string>(), HasSubstr("may not have run the schemes' own weights"));
}

TEST_F(ReportTest, SchemeEqualToBaseIsFlagged) {
  std::vector<FakeScheme> s = Monotone();
  s[1].sample_kl = {0, 0};
  s[1].mse = 0;
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(s)));
  const ojson& same = r["findings"]["identical_schemes"];
  ASSERT_EQ(same.size(), 1u) << same.dump(2);
  EXPECT_EQ(same[0]["schemes"], ojson({"base", "top50"}));
  EXPECT_THAT(same[0]["message"].get<std::string>(), HasSubstr("IDENTICAL TO BASE"));
}

TEST_F(ReportTest, MixedFingerprintsAreRefused) {
  std::vector<FakeScheme> s = Monotone();
  s[2].eval_fingerprint = "ffffffffffffffff";
  absl::StatusOr<ojson> r = BuildReport(Read(s));
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("different eval sets or base models"));
  EXPECT_THAT(r.status().message(), HasSubstr("top100 on eval set ffffffffffff"));

  s = Monotone();
  s[0].base_fingerprint = "cccccccccccccccc";
  EXPECT_EQ(BuildReport(Read(s)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ReportTest, MixedFingerprintsWhenAllowedAreAFindingAndNotCompared) {
  std::vector<FakeScheme> s = Monotone();
  s[2].eval_fingerprint = "ffffffffffffffff";
  s[2].kl = 0.0001, s[2].kl_lo = 0.00005,
  s[2].kl_hi = 0.00015;  // would be an inversion on one eval set
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(s), {.allow_mixed_inputs = true}));
  EXPECT_EQ(r["inputs_mixed"], true);
  const ojson& mixed = r["findings"]["mixed_inputs"];
  ASSERT_EQ(mixed.size(), 2u);
  EXPECT_EQ(mixed[0]["schemes"], ojson({"top10", "top50"}));
  EXPECT_EQ(mixed[1]["schemes"], ojson({"top100"}));
  EXPECT_TRUE(r["findings"]["inversions"].empty()) << r["findings"]["inversions"].dump(2);
}

TEST_F(ReportTest, NonFiniteGenerationIsFlagged) {
  std::vector<FakeScheme> s = Monotone();
  s[1].all_finite = false;
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(s)));
  const ojson& nf = r["findings"]["non_finite_generation"];
  ASSERT_EQ(nf.size(), 1u);
  EXPECT_EQ(nf[0]["scheme"], "top50");
  EXPECT_EQ(nf[0]["prompts"], ojson({1}));
  EXPECT_THAT(ReportMarkdown(r), HasSubstr("14.5/16 (NON-FINITE)"));
}

TEST_F(ReportTest, TheSameDirectoryTwiceIsRefused) {
  std::vector<ReportPoint> points = Read({Monotone()[0]});
  points.push_back(points.front());
  EXPECT_EQ(BuildReport(points).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildReport({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ReportTest, MarkdownHasATableRowPerPointAndLinksThePlot) {
  std::vector<FakeScheme> s = Monotone();
  s[2].kl = 0.0012, s[2].kl_lo = 0.0011, s[2].kl_hi = 0.0013;
  ASSERT_OK_AND_ASSIGN(ojson r, BuildReport(Read(s)));
  const std::string md = ReportMarkdown(r);
  EXPECT_THAT(md, HasSubstr("| scheme | coverage | eff. bits | groups per format | ppl | Δppl [95 % CI] | logit MSE "
                            "[95 % CI] | KL [95 % CI] | gen agreement |"));
  EXPECT_THAT(md, HasSubstr("| base | 0 % | 16 | — | 12 | +0 | 0 | 0 | — |"));
  EXPECT_THAT(md, HasSubstr("| top10 | 10 % | 15 | — | 12.1 | +0.1 [0.05, 0.15] | 0.01 [0.005, 0.015] | 0.001 "
                            "[0.0008, 0.0012] | 14.5/16 |"));
  EXPECT_THAT(md, HasSubstr("| top50 | 50 % | 12 | — | 12.3 | +0.3 [0.2, 0.4] |"));
  EXPECT_THAT(md, HasSubstr("| top100 | 100 % | 8 | — | 12.9 | +0.9 [0.7, 1.1] |"));
  EXPECT_THAT(md, HasSubstr("Inversion (**beyond noise**): KL (last token): top100 (coverage 100 %)"));
  EXPECT_THAT(md, HasSubstr("](report.png)"));
  // The report round-trips through its file: NaN became null and still renders.
  ojson reread = ojson::parse(r.dump());
  reread["points"][0]["logit_kl_last_token"]["mean"] = nullptr;
  EXPECT_THAT(ReportMarkdown(reread),
              HasSubstr("| top10 | 10 % | 15 | — | 12.1 | +0.1 [0.05, 0.15] | 0.01 [0.005, 0.015] | n/a"));
}

}  // namespace
}  // namespace autoquant
