// A scheme's layer-sensitivity/ folder: what each of the four files records
// for a hand-made baseline and plan, that the quant manifest reads back as
// written, that the coverage manifest feeds back into the same plan, and how
// ReadSchemeManifest / RecogniseSchemeOutput refuse what is not ours.
#include "core/scheme/manifests.h"

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/util/dir_handle.h"
#include "core/util/file_util.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

std::string Key(int layer) { return absl::StrCat("language_model.layers.", layer, ".mlp.down_proj.quant_recipe"); }

// Four groups (layers 0..3, one Linear of 100 weights each) with FP8 scores
// 4, 1, 3, 2: least sensitive first, the ranking is 1, 3, 2, 0.
Baseline FourGroups() {
  Baseline b;
  b.key = std::string(64, 'a');
  b.inputs.method = ScoreMethod::kKlDiv;
  b.formats = {Format::kFp8, Format::kNone};
  b.inputs.formats = {Format::kFp8};
  const double fp8[] = {4, 1, 3, 2};
  for (int i = 0; i < 4; ++i) {
    std::string name = absl::StrCat("model.language_model.layers.", i, ".mlp.down_proj");
    b.linears.push_back({name, 100, 10, 10});
    QuantGroup g;
    g.key = Key(i);
    g.modules = {name};
    g.linear_index = {size_t(i)};
    g.weight_numel = 100;
    b.groups.push_back(g);
    b.scores.push_back({fp8[i], 0});
    b.costs.push_back({50, 100});
  }
  b.total_weight_numel = 400;
  b.ComputeRanking();
  return b;
}

SchemeRecord Record(const std::string& scheme, const std::string& job_id = "") {
  SchemeRecord r;
  r.scheme = scheme;
  r.format = "compressed-tensors";
  r.job_id = job_id;
  r.digests = {{"model.language_model.layers.0.mlp.down_proj.weight",
                {"model-00001-of-00002.safetensors", std::string(64, '1')}},
               {"lm_head.weight", {"model-00002-of-00002.safetensors", std::string(64, '2')}}};
  return r;
}

// Selections, each field set by name (no designated initializers: they leave
// the others to -Wmissing-field-initializers).
SchemeSelection Coverage(double coverage, std::vector<std::string> disabled = {}) {
  SchemeSelection s;
  s.coverage = coverage;
  s.disabled_layers = std::move(disabled);
  return s;
}
SchemeSelection FromManifest(CoverageManifest m, std::vector<std::string> disabled = {}) {
  SchemeSelection s;
  s.coverage_manifest = std::move(m);
  s.disabled_layers = std::move(disabled);
  return s;
}
SchemeSelection Bits(double bits) {
  SchemeSelection s;
  s.effective_bits = bits;
  return s;
}

// A coverage manifest with group 0 disabled by its own pattern, selecting 1 and 3.
CoverageManifest SeedManifest() { return {{Key(1), Key(3)}, {Key(0), Key(2)}, {"*layers.0.*"}}; }

class ManifestsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::TempDir(); }
  fs::path Sensitivity(const std::string& scheme) { return dir_ / scheme / "layer-sensitivity"; }
  void WriteManifest(const std::string& scheme, const std::string& text) {
    fs::create_directories(Sensitivity(scheme));
    ASSERT_OK(WriteFileAtomic(Sensitivity(scheme) / (scheme + "_quant_manifest.json"), text));
  }
  fs::path dir_;
};

TEST_F(ManifestsTest, WritesTheFourFilesAndTheQuantManifestReadsBack) {
  Baseline b = FourGroups();
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, Coverage(0.5)));
  ASSERT_OK(WriteLayerSensitivity(Sensitivity("top50"), b, p, Record("top50", "j-0123")));
  for (const char* f : {"top50_quant_manifest.json", "top50_coverage_from_baseline.json", "top50_search_state.json",
                        "per-layer-sensitivity.md"}) {
    EXPECT_TRUE(fs::is_regular_file(Sensitivity("top50") / f)) << f;
  }

  ASSERT_OK_AND_ASSIGN(SchemeManifest m, ReadSchemeManifest(dir_ / "top50"));
  EXPECT_EQ(m.scheme, "top50");
  EXPECT_EQ(m.producer, "autoquant");
  EXPECT_EQ(m.baseline_key, b.key);
  EXPECT_EQ(m.job_id, "j-0123");
  EXPECT_DOUBLE_EQ(m.effective_bits, 12.0);  // two of four groups at 8 bits
  ASSERT_TRUE(m.coverage.has_value());
  EXPECT_DOUBLE_EQ(*m.coverage, 0.5);
  EXPECT_EQ(m.num_groups, 4);
  EXPECT_EQ(m.num_quantized, 2);
  ASSERT_EQ(m.groups.size(), 4u);
  EXPECT_EQ(m.groups.at(Key(0)).format, Format::kNone);
  EXPECT_EQ(m.groups.at(Key(1)).format, Format::kFp8);
  EXPECT_EQ(m.groups.at(Key(2)).format, Format::kNone);
  EXPECT_EQ(m.groups.at(Key(3)).format, Format::kFp8);
  EXPECT_THAT(m.groups.at(Key(1)).modules, ElementsAre("model.language_model.layers.1.mlp.down_proj"));
  ASSERT_TRUE(m.integrity.has_value());
  ASSERT_EQ(m.integrity->size(), 2u);
  EXPECT_EQ(m.integrity->at("lm_head.weight").file, "model-00002-of-00002.safetensors");
  EXPECT_EQ(m.integrity->at("lm_head.weight").sha256, std::string(64, '2'));
  ASSERT_OK(RecogniseSchemeOutput(dir_ / "top50"));
}

TEST(QuantManifestJsonTest, RecordsTheSelectionRankingScoresAndChoices) {
  Baseline b = FourGroups();
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, Coverage(0.5)));
  ojson j = QuantManifestJson(b, p, Record("top50"));
  EXPECT_EQ(j["scheme"], "top50");
  EXPECT_EQ(j["producer"]["name"], "autoquant");
  EXPECT_EQ(j["producer"]["version"], AUTOQUANT_VERSION);
  EXPECT_EQ(j["format"], "compressed-tensors");
  EXPECT_FALSE(j.contains("job_id"));  // written outside the daemon
  EXPECT_EQ(j["method"], "kl_div");
  EXPECT_EQ(j["formats"], ojson::array({"FP8_DEFAULT_CFG(effective-bits: 8.0)", "NONE(effective-bits: 16.0)"}));
  EXPECT_EQ(j["selection"]["kind"], "coverage");
  EXPECT_EQ(j["selection"]["coverage"], 0.5);
  EXPECT_TRUE(j["constraints"].empty());
  EXPECT_EQ(j["num_quantized"], 2);
  EXPECT_EQ(j["total_weight_numel"], 400);
  EXPECT_EQ(j["sensitivity_ranking"], ojson::array({Key(1), Key(3), Key(2), Key(0)}));
  auto& g0 = j["groups"][Key(0)];
  EXPECT_EQ(g0["scores"]["FP8"], 4.0);
  EXPECT_EQ(g0["scores"]["NONE"], 0.0);
  EXPECT_EQ(g0["costs"]["FP8"], 50.0);
  EXPECT_EQ(g0["costs"]["NONE"], 100.0);
  EXPECT_EQ(g0["chosen"], "NONE");
  EXPECT_EQ(g0["disabled"], false);
  EXPECT_EQ(j["groups"][Key(3)]["chosen"], "FP8");
  EXPECT_EQ(j["integrity"]["algorithm"], "sha256");
  EXPECT_EQ(j["integrity"]["tensors"]["lm_head.weight"]["sha256"], std::string(64, '2'));
}

// The request's patterns and the coverage manifest's are merged, and the
// manifest says which came from where and which group each one disabled.
TEST(QuantManifestJsonTest, DisabledLayersNameTheirSourceAndTheirGroups) {
  Baseline b = FourGroups();
  SchemeRecord r = Record("seeded");
  r.disabled_by_flag = {"*layers.2.*"};
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, FromManifest(SeedManifest(), r.disabled_by_flag)));
  ojson j = QuantManifestJson(b, p, r);
  EXPECT_EQ(j["selection"]["kind"], "coverage_manifest");
  EXPECT_FALSE(j.contains("coverage"));
  EXPECT_EQ(j["selection"]["disabled_layers"], ojson::array({"*layers.2.*", "*layers.0.*"}));
  EXPECT_EQ(j["selection"]["disabled_layers_sources"]["request"], ojson::array({"*layers.2.*"}));
  EXPECT_EQ(j["selection"]["disabled_layers_sources"]["coverage_manifest"], ojson::array({"*layers.0.*"}));
  EXPECT_EQ(j["groups"][Key(0)]["disabled"], true);
  EXPECT_EQ(j["groups"][Key(0)]["disabled_by"], ojson::array({"*layers.0.*"}));
  EXPECT_EQ(j["groups"][Key(2)]["disabled_by"], ojson::array({"*layers.2.*"}));
  EXPECT_EQ(j["groups"][Key(1)]["disabled"], false);
  EXPECT_EQ(j["groups"][Key(1)]["chosen"], "FP8");
}

TEST(QuantManifestJsonTest, EffectiveBitsTargetIsTheConstraint) {
  Baseline b = FourGroups();
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, Bits(14)));
  ojson j = QuantManifestJson(b, p, Record("bits14"));
  EXPECT_EQ(j["selection"]["kind"], "effective_bits");
  EXPECT_EQ(j["selection"]["effective_bits"], 14.0);
  EXPECT_EQ(j["constraints"]["effective_bits"], 14.0);
  EXPECT_EQ(j["effective_bits"], 14.0);
  EXPECT_EQ(j["num_quantized"], 1);
  EXPECT_EQ(j["groups"][Key(1)]["chosen"], "FP8");  // the least sensitive group
}

// The seed-format file, fed back as a coverage manifest, reproduces the plan.
TEST(CoverageManifestJsonTest, FedBackItReproducesThePlan) {
  Baseline b = FourGroups();
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, Coverage(0.5, {"*layers.1.*"})));
  ojson j = CoverageManifestJson(b, p, "top50");
  EXPECT_EQ(j["scheme"], "top50");
  EXPECT_EQ(j["baseline_key"], b.key);
  EXPECT_EQ(j["coverage"], 0.5);
  // Enabled: 3 groups -> 2 quantized, 3 then 2 in ranking order.
  EXPECT_EQ(j["selected_layers"], ojson::array({Key(3), Key(2)}));
  EXPECT_EQ(j["dropped_layers"], ojson::array({Key(1), Key(0)}));
  EXPECT_EQ(j["disabled_layers"], ojson::array({"*layers.1.*"}));

  ASSERT_OK_AND_ASSIGN(CoverageManifest m, ParseCoverageManifest(json::parse(j.dump()), "top50"));
  std::vector<std::string> keys;
  for (const auto& g : b.groups) keys.push_back(g.key);
  ASSERT_OK(ValidatePartition(m, keys));
  ASSERT_OK_AND_ASSIGN(Plan again, MakePlan(b, FromManifest(m)));
  EXPECT_EQ(again.format, p.format);
  EXPECT_EQ(again.disabled, p.disabled);
  EXPECT_DOUBLE_EQ(again.effective_bits, p.effective_bits);
}

TEST(SearchStateJsonTest, HasModelOptsShapeAndSaysWhetherTheTargetIsMet) {
  Baseline b = FourGroups();
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, Coverage(0.5)));
  ojson j = SearchStateJson(b, p);
  EXPECT_EQ(j["method"], "kl_div");
  EXPECT_EQ(j["cost_denominator"], 400);
  auto& s0 = j["candidate_stats"][Key(0)];
  EXPECT_EQ(s0["formats"], ojson::array({"FP8_DEFAULT_CFG(effective-bits: 8.0)", "NONE(effective-bits: 16.0)"}));
  EXPECT_EQ(s0["scores"], ojson::array({4.0, 0.0}));
  EXPECT_EQ(s0["costs"], ojson::array({50.0, 100.0}));
  EXPECT_EQ(s0["module_names"], ojson::array({"model.language_model.layers.0.mlp.down_proj"}));
  EXPECT_EQ(s0["is_fixed"], true);  // not among the coverage's groups
  EXPECT_EQ(j["candidate_stats"][Key(1)]["is_fixed"], false);
  EXPECT_EQ(j["best"]["recipe"][Key(1)], "FP8_DEFAULT_CFG(effective-bits: 8.0)");
  EXPECT_EQ(j["best"]["recipe"][Key(0)], "NONE(effective-bits: 16.0)");
  EXPECT_EQ(j["best"]["score"], 3.0);  // groups 1 and 3: FP8 scores 1 + 2
  EXPECT_EQ(j["best"]["constraints"]["effective_bits"], 12.0);
  EXPECT_EQ(j["best"]["is_satisfied"], true);  // no target

  p.target_bits = 11;  // a plan above its target is reported, not hidden
  EXPECT_EQ(SearchStateJson(b, p)["best"]["is_satisfied"], false);
  p.target_bits = 12;
  EXPECT_EQ(SearchStateJson(b, p)["best"]["is_satisfied"], true);
}

TEST(SensitivityMarkdownTest, OneRowPerGroupInRankingOrder) {
  Baseline b = FourGroups();
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, Coverage(0.5)));
  std::string md = SensitivityMarkdown(b, p, "top50");
  EXPECT_THAT(md, HasSubstr("# Per-layer sensitivity: top50"));
  EXPECT_THAT(md, HasSubstr("Method `kl_div`, baseline `aaaaaaaaaaaa`"));
  EXPECT_THAT(md, HasSubstr("2 of 4 groups quantized"));
  EXPECT_THAT(md, Not(HasSubstr("Disabled by")));
  const std::string rows[] = {
      absl::StrCat("| 1 | `", Key(1), "` | 1 | 100 | 1 | FP8 |"),
      absl::StrCat("| 2 | `", Key(3), "` | 1 | 100 | 2 | FP8 |"),
      absl::StrCat("| 3 | `", Key(2), "` | 1 | 100 | 3 | NONE |"),
      absl::StrCat("| 4 | `", Key(0), "` | 1 | 100 | 4 | NONE |"),
  };
  size_t at = 0;
  for (const std::string& row : rows) {
    size_t found = md.find(row, at);
    ASSERT_NE(found, std::string::npos) << row << "\nin\n" << md;
    at = found + row.size();
  }

  ASSERT_OK_AND_ASSIGN(Plan disabled, MakePlan(b, Coverage(0.5, {"*layers.1.*"})));
  md = SensitivityMarkdown(b, disabled, "top50");
  EXPECT_THAT(md, HasSubstr("Disabled by `disabled_layers`"));
  EXPECT_THAT(md, HasSubstr("`*layers.1.*`"));
  EXPECT_THAT(md, HasSubstr(absl::StrCat("| 1 | `", Key(1), "` | 1 | 100 | 1 | NONE (disabled) |")));
}

TEST_F(ManifestsTest, OlderManifestWithoutIntegrityOrCoverageStillReads) {
  WriteManifest("old", R"({"scheme": "old", "producer": {"name": "autoquant"}, "effective_bits": 12,
      "groups": {"g.quant_recipe": {"chosen": "FP8", "modules": ["model.g"]}}})");
  ASSERT_OK_AND_ASSIGN(SchemeManifest m, ReadSchemeManifest(dir_ / "old"));
  EXPECT_EQ(m.scheme, "old");
  EXPECT_FALSE(m.integrity.has_value());
  EXPECT_FALSE(m.coverage.has_value());
  EXPECT_EQ(m.job_id, "");
  EXPECT_EQ(m.num_groups, 1);  // counted from the groups when not recorded
  EXPECT_EQ(m.groups.at("g.quant_recipe").format, Format::kFp8);
}

TEST_F(ManifestsTest, ReadRefusesMissingSeveralMalformedAndOversizedManifests) {
  auto missing = ReadSchemeManifest(dir_ / "absent");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("_quant_manifest.json"));

  WriteManifest("two", R"({"groups": {}})");
  ASSERT_OK(WriteFileAtomic(Sensitivity("two") / "other_quant_manifest.json", R"({"groups": {}})"));
  auto two = ReadSchemeManifest(dir_ / "two");
  EXPECT_EQ(two.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(two.status().message(), HasSubstr("more than one"));

  WriteManifest("garbled", "{\"scheme\": ");
  auto garbled = ReadSchemeManifest(dir_ / "garbled");
  EXPECT_EQ(garbled.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(garbled.status().message(), HasSubstr("not valid JSON"));

  WriteManifest("nogroups", R"({"scheme": "nogroups"})");
  auto nogroups = ReadSchemeManifest(dir_ / "nogroups");
  EXPECT_EQ(nogroups.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(nogroups.status().message(), HasSubstr("malformed quant manifest"));

  // A chosen format this build does not know is refused, naming the group.
  WriteManifest("nvfp4", R"({"groups": {"g.quant_recipe": {"chosen": "MXFP4", "modules": ["model.g"]}}})");
  auto nvfp4 = ReadSchemeManifest(dir_ / "nvfp4");
  EXPECT_EQ(nvfp4.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(nvfp4.status().message(), HasSubstr("'g.quant_recipe'"));
  EXPECT_THAT(nvfp4.status().message(), HasSubstr("'MXFP4'"));

  WriteManifest("md5", R"({"groups": {}, "integrity": {"algorithm": "md5", "tensors": {}}})");
  auto md5 = ReadSchemeManifest(dir_ / "md5");
  EXPECT_EQ(md5.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(md5.status().message(), HasSubstr("unknown integrity algorithm"));

  // Bigger than anything autoquant writes: refused before it is read (a sparse file).
  WriteManifest("huge", "{}");
  fs::resize_file(Sensitivity("huge") / "huge_quant_manifest.json",
                  static_cast<std::uintmax_t>(kMaxSchemeJsonBytes) + 1);
  auto huge = ReadSchemeManifest(dir_ / "huge");
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(huge.status().message(), HasSubstr("bytes"));
}

// What --overwrite may replace: only a directory whose manifest names autoquant.
TEST_F(ManifestsTest, RecogniseSchemeOutputAcceptsOnlyOurProducer) {
  WriteManifest("theirs", R"({"producer": {"name": "modelopt"}, "groups": {}})");
  absl::Status theirs = RecogniseSchemeOutput(dir_ / "theirs");
  EXPECT_EQ(theirs.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(theirs.message(), HasSubstr("'modelopt'"));

  WriteManifest("anonymous", R"({"groups": {}})");
  EXPECT_EQ(RecogniseSchemeOutput(dir_ / "anonymous").code(), absl::StatusCode::kFailedPrecondition);

  fs::create_directories(dir_ / "plain");
  EXPECT_EQ(RecogniseSchemeOutput(dir_ / "plain").code(), absl::StatusCode::kNotFound);

  Baseline b = FourGroups();
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, Coverage(1.0)));
  ASSERT_OK(WriteLayerSensitivity(Sensitivity("ours"), b, p, Record("ours")));
  ASSERT_OK(RecogniseSchemeOutput(dir_ / "ours"));
}

}  // namespace
}  // namespace autoquant
