#include "core/engine/engine.h"

#include <torch/torch.h>

#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "core/io/checkpoint.h"
#include "core/io/checkpoint_writer.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/presets.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "core/scheme/export.h"
#include "core/scheme/integrity.h"
#include "core/scheme/scheme_diff.h"
#include "core/util/file_util.h"
#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace autoquant {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A tiny random model and two calibration sets that differ only in their seed.
class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir();
    ASSERT_OK(InitRandomCheckpoint({.preset = "tiny", .out = dir_ / "base", .seed = 3, .dtype = torch::kFloat32}));
    ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, Checkpoint::Open(dir_ / "base"));
    ASSERT_OK_AND_ASSIGN(Qwen2_5_VLConfig config, CheckpointConfig(ckpt));
    for (uint64_t seed : {1, 2}) {
      ASSERT_OK_AND_ASSIGN(CalibSet set, SynthesizeCalibSet(config, {.samples = 4,
                                                                     .seq_len = 48,
                                                                     .images_per_sample = 1,
                                                                     .image_height = 56,
                                                                     .image_width = 56,
                                                                     .seed = seed}));
      ASSERT_OK(set.Save(dir_ / ("calib" + std::to_string(seed) + ".safetensors")));
    }
  }
  absl::StatusOr<std::unique_ptr<Engine>> Make(int calib) {
    return Engine::Create({.model_dir = dir_ / "base",
                           .calib_path = dir_ / ("calib" + std::to_string(calib) + ".safetensors"),
                           .baseline_cache = dir_ / "cache",
                           .device = "cpu"});
  }
  SchemeRequest Coverage(const std::string& name, double c) {
    SchemeRequest r;
    r.out_dir = dir_ / name;
    r.selection.coverage = c;
    return r;
  }
  fs::path dir_;
};

TEST_F(EngineTest, SecondSchemeReusesTheBaselineWithoutScoring) {
  ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
  ASSERT_OK_AND_ASSIGN(SchemeResult a, engine->RunScheme(Coverage("a", 0.5)));
  EXPECT_FALSE(a.baseline_reused);
  EXPECT_EQ(engine->scoring_passes(), 1);
  ASSERT_OK_AND_ASSIGN(SchemeResult b, engine->RunScheme(Coverage("b", 1.0)));
  EXPECT_TRUE(b.baseline_reused);
  EXPECT_EQ(engine->scoring_passes(), 1);  // no scoring pass ran for the second scheme
  EXPECT_EQ(a.baseline_key, b.baseline_key);
  EXPECT_GT(b.groups_quantized, a.groups_quantized);

  // A new process (engine) finds the baseline in the cache directory.
  ASSERT_OK_AND_ASSIGN(auto again, Make(1));
  ASSERT_OK_AND_ASSIGN(SchemeResult c, again->RunScheme(Coverage("c", 0.25)));
  EXPECT_TRUE(c.baseline_reused);
  EXPECT_EQ(again->scoring_passes(), 0);

  ASSERT_OK_AND_ASSIGN(SchemeDiffReport report, DiffSchemes({dir_ / "a", dir_ / "b", dir_ / "c"}));
  EXPECT_TRUE(report.ok()) << report.ToText();
}

// Exports after the first reuse the digests of the base's tensors and of FP8 weights (tensor_digests.h)
// instead of hashing again: what they record must still be the bytes on disk.
TEST_F(EngineTest, ReusedDigestsMatchTheWrittenBytes) {
  ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
  for (const char* name : {"d1", "d2", "d3"}) {
    ASSERT_OK(engine->RunScheme(Coverage(name, name[1] == '3' ? 1.0 : 0.5)).status());
    EXPECT_TRUE(VerifySchemeIntegrity(dir_ / name).ok()) << name;
  }
  ASSERT_OK_AND_ASSIGN(TensorDigests d1, ComputeTensorDigests(dir_ / "d1"));
  ASSERT_OK_AND_ASSIGN(TensorDigests d2, ComputeTensorDigests(dir_ / "d2"));
  for (const auto& [name, d] : d1) EXPECT_EQ(d.sha256, d2.at(name).sha256) << name;
}

// --export-threads sets how many threads write a standalone export; 0 keeps the rule (on the CPU,
// ExportOptions' default), and the job reports the count it used.
TEST_F(EngineTest, ExportThreadsOptionSetsTheWriterThreads) {
  ASSERT_OK_AND_ASSIGN(auto by_rule, Make(1));
  ASSERT_OK_AND_ASSIGN(SchemeResult a, by_rule->RunScheme(Coverage("rule", 0.5)));
  EXPECT_EQ(a.export_writer_threads, ExportOptions{}.writer_threads);
  ASSERT_OK_AND_ASSIGN(auto three, Engine::Create({.model_dir = dir_ / "base",
                                                   .calib_path = dir_ / "calib1.safetensors",
                                                   .baseline_cache = dir_ / "cache",
                                                   .device = "cpu",
                                                   .export_threads = 3}));
  ASSERT_OK_AND_ASSIGN(SchemeResult b, three->RunScheme(Coverage("three", 0.5)));
  EXPECT_EQ(b.export_writer_threads, 3);
}

// FP8 weights are quantized from the resident model's copy only where it holds the checkpoint's bytes:
// a float32 model of a float32 checkpoint does; a bfloat16 one holds rounded values, so its export reads
// the checkpoint, and both write the same FP8 weights and weight scales (hashed from disk here).
TEST_F(EngineTest, Fp8WeightsComeFromTheResidentModelOnlyWhenItHoldsTheCheckpointBytes) {
  ASSERT_OK_AND_ASSIGN(auto same, Make(1));
  ASSERT_OK_AND_ASSIGN(SchemeResult a, same->RunScheme(Coverage("resident", 1.0)));
  ASSERT_GT(a.groups_quantized, 0u);
  ASSERT_OK_AND_ASSIGN(Checkpoint written, Checkpoint::Open(dir_ / "resident"));
  size_t fp8 = 0;
  for (const auto& name : written.TensorNames()) fp8 += written.Find(name)->dtype == DType::kF8E4M3 ? 1 : 0;
  EXPECT_EQ(a.export_resident_weights, fp8);
  EXPECT_GT(a.export_produce_seconds + a.export_pwrite_seconds, 0);

  ASSERT_OK_AND_ASSIGN(auto rounded, Engine::Create({.model_dir = dir_ / "base",
                                                     .calib_path = dir_ / "calib1.safetensors",
                                                     .baseline_cache = dir_ / "cache",
                                                     .device = "cpu",
                                                     .dtype = "bfloat16"}));
  ASSERT_OK_AND_ASSIGN(SchemeResult b, rounded->RunScheme(Coverage("from-checkpoint", 1.0)));
  EXPECT_EQ(b.export_resident_weights, 0u);
  EXPECT_EQ(b.groups_quantized, a.groups_quantized);
  ASSERT_OK_AND_ASSIGN(TensorDigests da, ComputeTensorDigests(dir_ / "resident"));
  ASSERT_OK_AND_ASSIGN(TensorDigests db, ComputeTensorDigests(dir_ / "from-checkpoint"));
  ASSERT_EQ(da.size(), db.size());
  size_t compared = 0;
  for (const auto& [name, d] : da) {
    if (absl::EndsWith(name, ".input_scale")) continue;  // calibrated in each model's dtype
    EXPECT_EQ(d.sha256, db.at(name).sha256) << name;
    ++compared;
  }
  EXPECT_GT(compared, fp8);
}

TEST_F(EngineTest, ChangedCalibrationSetOrMethodDoesNotReuse) {
  ASSERT_OK_AND_ASSIGN(auto e1, Make(1));
  ASSERT_OK_AND_ASSIGN(SchemeResult a, e1->RunScheme(Coverage("a", 0.5)));
  ASSERT_OK_AND_ASSIGN(auto e2, Make(2));
  ASSERT_OK_AND_ASSIGN(SchemeResult b, e2->RunScheme(Coverage("b", 0.5)));
  EXPECT_FALSE(b.baseline_reused);
  EXPECT_NE(a.baseline_key, b.baseline_key);
  EXPECT_EQ(e2->scoring_passes(), 1);
  SchemeRequest kl = Coverage("kl", 0.5);
  kl.method = ScoreMethod::kKlDiv;
  ASSERT_OK_AND_ASSIGN(SchemeResult c, e1->RunScheme(kl));
  EXPECT_FALSE(c.baseline_reused);
  EXPECT_NE(a.baseline_key, c.baseline_key);
}

TEST_F(EngineTest, GradientScoresArePositiveAndRankingIsAPermutation) {
  ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
  ASSERT_OK_AND_ASSIGN(Baseline b, engine->GetBaseline({}));
  ASSERT_FALSE(b.groups.empty());
  for (size_t g = 0; g < b.groups.size(); ++g) {
    EXPECT_GT(b.scores[g][0], 0) << b.groups[g].key;
    EXPECT_EQ(b.scores[g][1], 0) << b.groups[g].key;  // NONE
  }
  std::vector<size_t> sorted = b.ranking;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) EXPECT_EQ(sorted[i], i);
  for (size_t i = 1; i < b.ranking.size(); ++i) {
    EXPECT_LE(b.scores[b.ranking[i - 1]][0], b.scores[b.ranking[i]][0]);
  }
}

TEST_F(EngineTest, IncludedVisionGroupsGetGradientAndKlScores) {
  ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
  for (ScoreMethod m : {ScoreMethod::kGradient, ScoreMethod::kKlDiv}) {
    ASSERT_OK_AND_ASSIGN(Baseline b, engine->GetBaseline({.method = m, .include_vision = true}));
    int vision = 0;
    for (size_t g = 0; g < b.groups.size(); ++g) {
      if (b.groups[g].key.rfind("visual.", 0) != 0) continue;
      ++vision;
      EXPECT_GT(b.scores[g][0], 0) << ScoreMethodName(m) << " " << b.groups[g].key;
    }
    EXPECT_GT(vision, 4) << ScoreMethodName(m);
  }
}

// Sets `cancel` at the first progress event of `phase` whose fraction is in
// [from, to], and records every event so a test can see where the run stopped.
struct CancelAt {
  Phase phase;
  double from = 0, to = 1;
  std::atomic<bool> cancel{false};
  std::vector<ProgressEvent> events;
  double fired_at = -1;

  ProgressFn Fn() {
    return [this](const ProgressEvent& e) {
      events.push_back(e);
      if (!cancel.load() && e.phase == phase && e.fraction >= from && e.fraction <= to) {
        fired_at = e.fraction;
        cancel.store(true);
      }
    };
  }
  // Events that arrived after the flag was set.
  std::vector<ProgressEvent> After() const {
    std::vector<ProgressEvent> out;
    bool seen = false;
    for (const auto& e : events) {
      if (seen) out.push_back(e);
      seen = seen || (e.phase == phase && e.fraction == fired_at);
    }
    return out;
  }
};

TEST_F(EngineTest, CancelledBeforeStartLeavesNoOutput) {
  ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
  std::atomic<bool> cancel{true};
  auto r = engine->RunScheme(Coverage("x", 0.5), nullptr, &cancel);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(fs::exists(dir_ / "x"));
}

// Cancels at each phase in turn, the export both between tensors (after some
// were written) and after the last one; every run must return Cancelled and
// leave nothing next to the output: no output directory, no staging
// directory (.NAME.tmp-*), no half-written shard.
TEST_F(EngineTest, CancelInEveryPhaseReturnsCancelledAndLeavesNothingBehind) {
  ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
  const fs::path models = dir_ / "models";
  fs::create_directories(models);
  struct Case {
    std::string name;
    Phase phase;
    double from, to;
  };
  const std::vector<Case> cases = {
      {"calibrate", Phase::kCalibrate, 0.01, 0.99},  // after the first batch, before the last
      {"score", Phase::kScore, 0.01, 0.99},         {"search", Phase::kSearch, 0, 0},
      {"export-mid", Phase::kExport, 0.01, 0.5},  // some tensors of the shard written
      {"export-end", Phase::kExport, 0.8, 0.8},   // every tensor written, files not yet committed
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    CancelAt at{c.phase, c.from, c.to};
    SchemeRequest req = Coverage(c.name, 0.5);
    req.out_dir = models / c.name;
    auto r = engine->RunScheme(req, at.Fn(), &at.cancel);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
    ASSERT_GE(at.fired_at, 0) << "never reached the phase";
    for (const auto& e : at.After()) {
      // Nothing of a later phase ran; within the phase only its completion
      // events (the export's last 20% are side files) may still arrive.
      EXPECT_EQ(e.phase, c.phase) << PhaseName(e.phase) << " " << e.fraction;
    }
    std::vector<std::string> left;
    for (const auto& entry : fs::directory_iterator(models)) left.push_back(entry.path().filename().string());
    EXPECT_TRUE(left.empty()) << ::testing::PrintToString(left);
    if (c.phase == Phase::kCalibrate || c.phase == Phase::kScore) {
      // A cancelled baseline is not cached: it would be reused as if complete.
      EXPECT_TRUE(!fs::exists(dir_ / "cache") || fs::is_empty(dir_ / "cache"));
    }
  }
  EXPECT_EQ(engine->scoring_passes(), 2);  // cancelled in score once, completed once (for search)
}

TEST_F(EngineTest, CorruptCacheEntryIsReportedRecomputedAndReplaced) {
  auto warnings = [](const std::vector<ProgressEvent>& events) {
    std::vector<std::string> out;
    for (const auto& e : events) {
      if (e.warning) out.push_back(e.message);
    }
    return out;
  };
  std::vector<ProgressEvent> events;
  auto record = [&events](const ProgressEvent& e) { events.push_back(e); };
  Baseline first;
  {
    ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
    ASSERT_OK_AND_ASSIGN(first, engine->GetBaseline({}, record));
    EXPECT_THAT(warnings(events), ::testing::IsEmpty());  // no entry yet is no problem
  }
  const fs::path file = dir_ / "cache" / ("baseline-" + first.key + ".json");
  ASSERT_OK_AND_ASSIGN(std::string good, ReadFile(file));
  nlohmann::json bad_ranking = nlohmann::json::parse(good);
  bad_ranking["ranking"][0] = first.groups.size();
  const std::vector<std::pair<std::string, std::string>> corruptions = {
      {good.substr(0, good.size() / 2), "not valid JSON"},
      {bad_ranking.dump(), "is out of range"},
  };
  for (const auto& [text, problem] : corruptions) {
    SCOPED_TRACE(problem);
    ASSERT_OK(WriteFileAtomic(file, text));
    ASSERT_OK_AND_ASSIGN(auto engine, Make(1));  // a new process: nothing in memory
    events.clear();
    bool reused = true;
    ASSERT_OK_AND_ASSIGN(Baseline again, engine->GetBaseline({}, record, nullptr, &reused));
    EXPECT_FALSE(reused);
    EXPECT_EQ(engine->scoring_passes(), 1);
    std::vector<std::string> w = warnings(events);
    ASSERT_EQ(w.size(), 1u);
    EXPECT_THAT(w[0], HasSubstr(file.string()));
    EXPECT_THAT(w[0], HasSubstr(problem));
    EXPECT_THAT(w[0], HasSubstr("recomputing"));
    EXPECT_EQ(again.ranking, first.ranking);
    // The bad file was replaced by the recomputed baseline.
    ASSERT_OK_AND_ASSIGN(Baseline on_disk, LoadBaseline(dir_ / "cache", first.key));
    EXPECT_EQ(on_disk.ranking, again.ranking);
    EXPECT_EQ(on_disk.scores, again.scores);
  }
}

TEST_F(EngineTest, BadRequestsAreClearErrors) {
  ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
  SchemeRequest r = Coverage("y", 0.5);
  r.selection.disabled_layers = {"*no_such_module*"};
  auto s = engine->RunScheme(r);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("'*no_such_module*'"));
  r = SchemeRequest{};
  r.out_dir = dir_ / "y";
  r.selection.effective_bits = 4.0;
  s = engine->RunScheme(r);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(s.status().message(), HasSubstr("minimum achievable is 8.0000 bits"));
  EXPECT_FALSE(fs::exists(dir_ / "y"));
}

// A tied copy of the tiny checkpoint: tie_word_embeddings on, no lm_head.weight
// (as Qwen2.5-VL-3B ships).
void WriteTiedCopy(const fs::path& src, const fs::path& dst) {
  ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, Checkpoint::Open(src));
  fs::create_directories(dst);
  std::vector<PlannedTensor> plan;
  for (const auto& name : ckpt.TensorNames()) {
    if (name == "lm_head.weight") continue;
    const TensorInfo* info = ckpt.Find(name);
    plan.push_back({{name, info->dtype, info->shape}, [&ckpt, name] { return ckpt.Get(name); }});
  }
  ASSERT_OK(WriteShardedSafetensors(dst, plan, {}).status());
  nlohmann::json config = *ckpt.config();
  config["tie_word_embeddings"] = true;
  ASSERT_OK(WriteFileAtomic(dst / "config.json", config.dump()));
}

TEST_F(EngineTest, TiedHeadStaysUnquantizedAndIsExcluded) {
  WriteTiedCopy(dir_ / "base", dir_ / "tied");
  ASSERT_OK_AND_ASSIGN(
      auto engine,
      Engine::Create({.model_dir = dir_ / "tied", .calib_path = dir_ / "calib1.safetensors", .device = "cpu"}));
  SchemeRequest req = Coverage("tied-all", 1.0);
  req.format = ExportFormat::kModelOpt;  // its exclude list names lm_head
  ASSERT_OK_AND_ASSIGN(SchemeResult r, engine->RunScheme(req));
  EXPECT_EQ(r.groups_quantized, r.groups_total);
  ASSERT_OK_AND_ASSIGN(Checkpoint out, Checkpoint::Open(dir_ / "tied-all"));
  EXPECT_EQ(out.Find("lm_head.weight"), nullptr);
  auto hf = nlohmann::json::parse(*ReadFile(dir_ / "tied-all" / "hf_quant_config.json"));
  auto excluded = hf["quantization"]["exclude_modules"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(excluded.begin(), excluded.end(), "lm_head"), excluded.end());
  ASSERT_OK_AND_ASSIGN(SchemeDiffReport report, DiffSchemes({dir_ / "tied-all"}));
  EXPECT_TRUE(report.ok()) << report.ToText();
}

// Every file under `dir` with its bytes: a byte-identity snapshot.
std::map<std::string, std::string> Snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  if (fs::is_regular_file(dir)) {
    out[dir.string()] = *ReadFile(dir);
    return out;
  }
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out[e.path().string()] = *ReadFile(e.path());
  }
  return out;
}

TEST_F(EngineTest, ValidateSchemeRefusesBadRequestsBeforeAnyScoring) {
  ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
  const auto base_before = Snapshot(dir_ / "base");
  const auto calib_before = Snapshot(dir_ / "calib1.safetensors");
  fs::create_directories(dir_ / "foreign");
  ASSERT_OK(WriteFileAtomic(dir_ / "foreign" / "mine.txt", "not a scheme"));
  fs::create_directory_symlink(dir_ / "base", dir_ / "base-link");

  struct Case {
    std::string what;
    SchemeRequest request;
    absl::StatusCode code;
    std::string message;
  };
  auto with = [&](fs::path out, auto edit) {
    SchemeRequest r = Coverage("unused", 0.5);
    r.out_dir = std::move(out);
    edit(r);
    return r;
  };
  auto same = [](SchemeRequest&) {};
  auto overwrite = [](SchemeRequest& r) { r.overwrite = true; };
  CoverageManifest wrong_keys{{"language_model.layers.0.mlp.gate_proj.quant_recipe"}, {"bogus.quant_recipe"}};
  const std::vector<Case> cases = {
      {"the base dir, overwrite", with(dir_ / "base", overwrite), absl::StatusCode::kInvalidArgument,
       "is the base model directory"},
      {"inside the base", with(dir_ / "base" / "scheme", overwrite), absl::StatusCode::kInvalidArgument,
       "lies inside the base model directory"},
      {"a symlink to the base", with(dir_ / "base-link", overwrite), absl::StatusCode::kInvalidArgument,
       "the base model directory"},
      {"the calibration file", with(dir_ / "calib1.safetensors", overwrite), absl::StatusCode::kInvalidArgument,
       "the calibration file"},
      {"around the cache", with(dir_, overwrite), absl::StatusCode::kInvalidArgument, "contains"},
      {"inside the cache", with(dir_ / "cache" / "s", same), absl::StatusCode::kInvalidArgument, "the baseline cache"},
      {"escaping scheme name", with(dir_ / "ok", [](SchemeRequest& r) { r.scheme = "../../evil"; }),
       absl::StatusCode::kInvalidArgument, "scheme name '../../evil'"},
      {"hidden default name", with(dir_ / ".hidden", same), absl::StatusCode::kInvalidArgument, "pass --scheme"},
      {"existing, no overwrite", with(dir_ / "foreign", same), absl::StatusCode::kAlreadyExists, "--overwrite"},
      {"foreign, overwrite", with(dir_ / "foreign", overwrite), absl::StatusCode::kFailedPrecondition,
       "not a previous output of autoquant"},
      {"no selection", with(dir_ / "n", [](SchemeRequest& r) { r.selection = {}; }), absl::StatusCode::kInvalidArgument,
       "exactly one"},
      {"coverage 1.5", with(dir_ / "n", [](SchemeRequest& r) { r.selection.coverage = 1.5; }),
       absl::StatusCode::kInvalidArgument, "outside (0, 1]"},
      {"coverage too small", with(dir_ / "n", [](SchemeRequest& r) { r.selection.coverage = 0.001; }),
       absl::StatusCode::kInvalidArgument, "selects no group"},
      {"manifest keys", with(dir_ / "n", [&](SchemeRequest& r) { r.selection = {.coverage_manifest = wrong_keys}; }),
       absl::StatusCode::kInvalidArgument, "extra 1 [bogus.quant_recipe]"},
      {"pattern", with(dir_ / "n", [](SchemeRequest& r) { r.selection.disabled_layers = {"*nope*"}; }),
       absl::StatusCode::kInvalidArgument, "'*nope*'"},
      {"infeasible bits", with(dir_ / "n", [](SchemeRequest& r) { r.selection = {.effective_bits = 7.9}; }),
       absl::StatusCode::kOutOfRange, "minimum achievable is 8.0000"},
      {"steps", with(dir_ / "n", [](SchemeRequest& r) { r.calib_steps = -1; }), absl::StatusCode::kInvalidArgument,
       "calib_steps"},
  };
  for (const Case& c : cases) {
    absl::Status v = engine->ValidateScheme(c.request);
    EXPECT_EQ(v.code(), c.code) << c.what << ": " << v;
    EXPECT_THAT(v.message(), HasSubstr(c.message)) << c.what;
    // RunScheme refuses the same way, before calibration or scoring.
    auto r = engine->RunScheme(c.request);
    EXPECT_EQ(r.status().code(), c.code) << c.what;
  }
  EXPECT_EQ(engine->scoring_passes(), 0);
  EXPECT_FALSE(fs::exists(dir_ / "cache"));
  EXPECT_EQ(Snapshot(dir_ / "base"), base_before);
  EXPECT_EQ(Snapshot(dir_ / "calib1.safetensors"), calib_before);
  EXPECT_EQ(*ReadFile(dir_ / "foreign" / "mine.txt"), "not a scheme");
  EXPECT_FALSE(fs::exists(dir_.parent_path() / "evil"));
}

TEST_F(EngineTest, ValidateSchemeRunsOnOtherThreadsDuringRunScheme) {
  ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
  std::atomic<bool> done{false};
  std::atomic<int> wrong{0};
  std::thread checker([&] {
    SchemeRequest bad = Coverage("z", 0.5);
    bad.selection.disabled_layers = {"*nope*"};
    while (!done.load()) {
      if (engine->ValidateScheme(bad).code() != absl::StatusCode::kInvalidArgument) ++wrong;
      if (!engine->ValidateScheme(Coverage("z", 0.5)).ok()) ++wrong;
    }
  });
  auto r = engine->RunScheme(Coverage("a", 0.5));
  done = true;
  checker.join();
  ASSERT_OK(r.status());
  EXPECT_EQ(wrong.load(), 0);
}

TEST_F(EngineTest, OverwriteReplacesOnlyASchemeOfOurs) {
  ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
  ASSERT_OK(engine->RunScheme(Coverage("s", 0.5)).status());
  auto again = engine->RunScheme(Coverage("s", 1.0));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  SchemeRequest r = Coverage("s", 1.0);
  r.overwrite = true;
  ASSERT_OK_AND_ASSIGN(SchemeResult res, engine->RunScheme(r));
  EXPECT_EQ(res.groups_quantized, res.groups_total);
  EXPECT_TRUE(VerifySchemeIntegrity(dir_ / "s").ok());
}

TEST_F(EngineTest, UnwritableBaselineCacheIsAWarningAndTheBaselineIsStillUsed) {
  // A regular file where the cache's parent directory should be: no process, root included, can create it.
  ASSERT_OK(WriteFileAtomic(dir_ / "blocker", "x"));
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create({.model_dir = dir_ / "base",
                                                    .calib_path = dir_ / "calib1.safetensors",
                                                    .baseline_cache = dir_ / "blocker" / "cache",
                                                    .device = "cpu"}));
  std::vector<ProgressEvent> warnings;
  ProgressFn progress = [&](const ProgressEvent& e) {
    if (e.warning) warnings.push_back(e);
  };
  ASSERT_OK_AND_ASSIGN(SchemeResult a, engine->RunScheme(Coverage("a", 0.5), progress));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0].message, HasSubstr("baseline not cached"));
  ASSERT_OK_AND_ASSIGN(SchemeResult b, engine->RunScheme(Coverage("b", 1.0), progress));
  EXPECT_TRUE(b.baseline_reused);  // from memory
  EXPECT_EQ(engine->scoring_passes(), 1);
}

TEST_F(EngineTest, ModelOptFormatWarnsThatTransformersCannotLoadIt) {
  ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
  std::vector<std::string> warnings;
  ProgressFn progress = [&](const ProgressEvent& e) {
    if (e.warning) warnings.push_back(e.message);
  };
  SchemeRequest r = Coverage("mo", 0.5);
  r.format = ExportFormat::kModelOpt;
  ASSERT_OK(engine->RunScheme(r, progress).status());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("transformers cannot load it"));
  EXPECT_THAT(*ReadFile(dir_ / "mo" / "README.md"), HasSubstr("Do not load it with transformers"));
  ASSERT_OK(engine->RunScheme(Coverage("ct", 0.5), progress).status());
  EXPECT_EQ(warnings.size(), 1u);  // the default format needs no warning
  auto config = nlohmann::json::parse(*ReadFile(dir_ / "ct" / "config.json"));
  EXPECT_EQ(config["quantization_config"]["quant_method"], "compressed-tensors");
}

TEST_F(EngineTest, ManifestRecordsTheSelectionPatternsAndDigests) {
  ASSERT_OK_AND_ASSIGN(auto engine, Make(1));
  ASSERT_OK_AND_ASSIGN(Baseline b, engine->GetBaseline({}));
  CoverageManifest m;
  for (const auto& g : b.groups) m.selected_layers.push_back(g.key);
  m.disabled_layers = {"*layers.0.mlp*"};
  SchemeRequest r = Coverage("m", 0.5);
  r.selection = {.coverage_manifest = m, .disabled_layers = {"*layers.1.self_attn*"}};
  ASSERT_OK(engine->RunScheme(r).status());
  auto q = nlohmann::json::parse(*ReadFile(dir_ / "m" / "layer-sensitivity" / "m_quant_manifest.json"));
  const auto& sel = q["selection"];
  EXPECT_EQ(sel["kind"], "coverage_manifest");
  EXPECT_EQ(sel["disabled_layers"], nlohmann::json({"*layers.1.self_attn*", "*layers.0.mlp*"}));
  EXPECT_EQ(sel["disabled_layers_sources"]["request"], nlohmann::json({"*layers.1.self_attn*"}));
  EXPECT_EQ(sel["disabled_layers_sources"]["coverage_manifest"], nlohmann::json({"*layers.0.mlp*"}));
  EXPECT_FALSE(sel["rules"].empty());
  const auto& g = q["groups"]["language_model.layers.0.mlp.gate_proj.quant_recipe"];
  EXPECT_EQ(g["chosen"], "NONE");
  EXPECT_EQ(g["disabled_by"], nlohmann::json({"*layers.0.mlp*"}));
  auto cov = nlohmann::json::parse(*ReadFile(dir_ / "m" / "layer-sensitivity" / "m_coverage_from_baseline.json"));
  EXPECT_EQ(cov["disabled_layers"], sel["disabled_layers"]);  // the seeds' field, so it can be fed back
  EXPECT_EQ(q["format"], "compressed-tensors");
  ASSERT_OK_AND_ASSIGN(Checkpoint out, Checkpoint::Open(dir_ / "m"));
  EXPECT_EQ(q["integrity"]["tensors"].size(), out.TensorNames().size());
  EXPECT_TRUE(VerifySchemeIntegrity(dir_ / "m").ok());
}

}  // namespace
}  // namespace autoquant
