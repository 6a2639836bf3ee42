// The daemon's engine-backed JobRunner: how a stored JobSpec becomes the
// engine's SchemeRequest under the models root, what Validate refuses before
// the engine is asked, and (over a real tiny engine on the CPU) the result a
// job records, the layout's metrics, and how a re-attempt treats what its
// cut-off predecessor published.
#include "core/jobs/engine_job_runner.h"

#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/presets.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "core/scheme/integrity.h"
#include "core/scheme/manifests.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsSupersetOf;
using ::testing::Key;
using ::testing::Not;

// The daemon's job store as the blob store sees it: records kept in memory.
class MemoryBlobRecords : public BlobRecords {
 public:
  absl::StatusOr<std::optional<BlobRecord>> LookupBlob(const std::string& key) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = records_.find(key);
    if (it == records_.end()) return std::optional<BlobRecord>();
    return std::optional<BlobRecord>(it->second);
  }
  absl::Status RecordBlob(const std::string& key, const BlobRecord& record) override {
    std::lock_guard<std::mutex> lock(mu_);
    records_[key] = record;
    return absl::OkStatus();
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return records_.size();
  }

 private:
  std::mutex mu_;
  std::map<std::string, BlobRecord> records_;
};

JobSpec CoverageSpec(const std::string& scheme, double coverage) {
  JobSpec s;
  s.scheme = scheme;
  s.selection.coverage = coverage;
  return s;
}

// ToRequest and the checks Validate makes before it asks the engine never
// touch the engine: these tests run without one.
class EngineJobRunnerRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::TempDir() / "models";
    fs::create_directories(root_);
  }
  fs::path root_;
};

TEST_F(EngineJobRunnerRequestTest, ToRequestCarriesEveryFieldUnderTheModelsRoot) {
  MemoryBlobRecords records;
  EngineJobRunner runner(nullptr, root_, nullptr, ExportLayout::kShared, &records);
  JobSpec s = CoverageSpec("kl30", 0.3);
  s.selection.disabled_layers = {"*visual*", "lm_head"};
  s.method = ScoreMethod::kKlDiv;
  s.format = ExportFormat::kModelOpt;
  s.layout = ExportLayout::kStandalone;
  s.calib_steps = 2;
  s.score_steps = 3;
  s.batch_size = 4;
  s.include_vision = true;
  s.overwrite = true;
  ASSERT_OK_AND_ASSIGN(SchemeRequest r, runner.ToRequest(s));
  EXPECT_EQ(r.scheme, "kl30");
  EXPECT_EQ(r.out_dir, root_ / "kl30");
  ASSERT_TRUE(r.selection.coverage.has_value());
  EXPECT_DOUBLE_EQ(*r.selection.coverage, 0.3);
  EXPECT_FALSE(r.selection.coverage_manifest.has_value());
  EXPECT_FALSE(r.selection.effective_bits.has_value());
  EXPECT_EQ(r.selection.disabled_layers, (std::vector<std::string>{"*visual*", "lm_head"}));
  EXPECT_EQ(r.method, ScoreMethod::kKlDiv);
  EXPECT_EQ(r.format, ExportFormat::kModelOpt);
  EXPECT_EQ(r.layout, ExportLayout::kStandalone);  // the job's own layout beats the default
  EXPECT_EQ(r.calib_steps, 2);
  EXPECT_EQ(r.score_steps, 3);
  EXPECT_EQ(r.batch_size, 4);
  EXPECT_TRUE(r.include_vision);
  EXPECT_TRUE(r.overwrite);
  EXPECT_EQ(r.blob_store, root_);
  EXPECT_EQ(r.blob_store_below, ".autoquant/blobs");
  EXPECT_EQ(r.blob_records, &records);
  EXPECT_EQ(r.job_id, "");  // set by Run, from the job
}

TEST_F(EngineJobRunnerRequestTest, ToRequestTurnsAManifestAndEffectiveBitsIntoTheSelection) {
  EngineJobRunner runner(nullptr, root_);
  JobSpec s;
  s.scheme = "seeded";
  s.selection.coverage_manifest.emplace();
  s.selection.coverage_manifest->selected_layers = {"a.quant_recipe"};
  s.selection.coverage_manifest->dropped_layers = {"b.quant_recipe", "c.quant_recipe"};
  s.selection.coverage_manifest->disabled_layers = {"c*"};
  s.selection.effective_bits = 12;
  ASSERT_OK_AND_ASSIGN(SchemeRequest r, runner.ToRequest(s));
  EXPECT_FALSE(r.selection.coverage.has_value());
  ASSERT_TRUE(r.selection.coverage_manifest.has_value());
  EXPECT_EQ(r.selection.coverage_manifest->selected_layers, (std::vector<std::string>{"a.quant_recipe"}));
  EXPECT_EQ(r.selection.coverage_manifest->dropped_layers,
            (std::vector<std::string>{"b.quant_recipe", "c.quant_recipe"}));
  EXPECT_EQ(r.selection.coverage_manifest->disabled_layers, (std::vector<std::string>{"c*"}));
  ASSERT_TRUE(r.selection.effective_bits.has_value());
  EXPECT_DOUBLE_EQ(*r.selection.effective_bits, 12);
  // Defaults of the spec: gradient, compressed-tensors.
  EXPECT_EQ(r.method, ScoreMethod::kGradient);
  EXPECT_EQ(r.format, ExportFormat::kCompressedTensors);
}

// A job that names no layout gets the daemon's --layout, whichever it is.
TEST_F(EngineJobRunnerRequestTest, EmptyLayoutTakesTheRunnersDefault) {
  JobSpec s = CoverageSpec("top50", 0.5);
  EngineJobRunner shared(nullptr, root_, nullptr, ExportLayout::kShared);
  ASSERT_OK_AND_ASSIGN(SchemeRequest a, shared.ToRequest(s));
  EXPECT_EQ(a.layout, ExportLayout::kShared);
  EngineJobRunner standalone(nullptr, root_, nullptr, ExportLayout::kStandalone);
  ASSERT_OK_AND_ASSIGN(SchemeRequest b, standalone.ToRequest(s));
  EXPECT_EQ(b.layout, ExportLayout::kStandalone);
  s.layout = ExportLayout::kShared;
  ASSERT_OK_AND_ASSIGN(SchemeRequest c, standalone.ToRequest(s));
  EXPECT_EQ(c.layout, ExportLayout::kShared);
}

// The scheme name becomes a path under the models root: anything but one plain component is refused.
// (The spec's other rules are ValidateSchemeSpec's, tested in scheme_spec_test.cc; unknown method,
// format and layout names cannot reach a JobSpec, whose fields are enums.)
TEST_F(EngineJobRunnerRequestTest, ToRequestRefusesNamesThatAreNotOnePlainComponent) {
  EngineJobRunner runner(nullptr, root_);
  for (const char* name : {"../escape", "a/b", "", ".hidden"}) {
    auto r = runner.ToRequest(CoverageSpec(name, 0.5));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
}

// A symbolic link where the scheme would go is never written through.
TEST_F(EngineJobRunnerRequestTest, SymlinkAtTheOutputIsRefused) {
  const fs::path elsewhere = root_.parent_path() / "elsewhere";
  fs::create_directories(elsewhere);
  fs::create_directory_symlink(elsewhere, root_ / "linked");
  EngineJobRunner runner(nullptr, root_);
  auto r = runner.ToRequest(CoverageSpec("linked", 0.5));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("symbolic link"));
  EXPECT_THAT(r.status().message(), HasSubstr((root_ / "linked").string()));
  // The same refusal when the job is submitted.
  EXPECT_EQ(runner.Validate(CoverageSpec("linked", 0.5)).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EngineJobRunnerRequestTest, ValidateRefusesBeforeAskingTheEngine) {
  EngineJobRunner runner(nullptr, root_);  // no engine: any call into it would crash

  JobSpec evaluate;
  evaluate.kind = JobKind::kEvaluate;
  evaluate.scheme = "top50";
  absl::Status s = runner.Validate(evaluate);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("--eval-set"));

  JobSpec and_evaluate = CoverageSpec("top50", 0.5);
  and_evaluate.evaluate = true;
  s = runner.Validate(and_evaluate);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("--eval-set"));
}

// Over a real engine: a tiny random Qwen2.5-VL and a calibration set, on the CPU.
class EngineJobRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir();
    root_ = dir_ / "models";
    fs::create_directories(root_);
    ASSERT_OK(InitRandomCheckpoint({.preset = "tiny", .out = dir_ / "base", .seed = 3, .dtype = torch::kFloat32}));
    ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, Checkpoint::Open(dir_ / "base"));
    ASSERT_OK_AND_ASSIGN(Qwen2_5_VLConfig config, CheckpointConfig(ckpt));
    ASSERT_OK_AND_ASSIGN(
        CalibSet set,
        SynthesizeCalibSet(
            config,
            {.samples = 4, .seq_len = 48, .images_per_sample = 1, .image_height = 56, .image_width = 56, .seed = 1}));
    ASSERT_OK(set.Save(dir_ / "calib.safetensors"));
    EngineOptions options;
    options.model_dir = dir_ / "base";
    options.calib_path = dir_ / "calib.safetensors";
    options.baseline_cache = dir_ / "cache";
    options.device = "cpu";
    ASSERT_OK_AND_ASSIGN(engine_, Engine::Create(options));
  }

  // Runs `spec` as job `id` (attempt `attempts`), recording its events.
  absl::StatusOr<JobResultInfo> RunJob(EngineJobRunner& runner, const std::string& id, const JobSpec& spec,
                                       int attempts = 1, const std::atomic<bool>* cancel = nullptr) {
    Job job;
    job.id = id;
    job.spec = spec;
    job.attempts = attempts;
    events_.clear();
    return runner.Run(
        job, [this](const RunnerEvent& e) { events_.push_back(e); }, cancel, PublishGate());
  }
  std::vector<std::string> Phases() const {
    std::vector<std::string> out;
    for (const auto& e : events_) out.push_back(std::string(PhaseName(e.phase)));
    return out;
  }
  const RunnerEvent* EventWith(const std::string& text) const {
    for (const auto& e : events_) {
      if (e.message.find(text) != std::string::npos) return &e;
    }
    return nullptr;
  }

  fs::path dir_, root_;
  std::unique_ptr<Engine> engine_;
  std::vector<RunnerEvent> events_;
};

TEST_F(EngineJobRunnerTest, AffinityIsTheModelAndCalibrationFingerprints) {
  EngineJobRunner runner(engine_.get(), root_);
  EXPECT_EQ(runner.Affinity(), engine_->model_fingerprint() + ":" + engine_->calib_fingerprint());
  EXPECT_EQ(engine_->model_fingerprint().size(), 64u);
  EXPECT_EQ(engine_->calib_fingerprint().size(), 64u);
  EXPECT_NE(engine_->model_fingerprint(), engine_->calib_fingerprint());
}

TEST_F(EngineJobRunnerTest, ValidateAsksTheEngineAboutTheModel) {
  EngineJobRunner runner(engine_.get(), root_);
  ASSERT_OK(runner.Validate(CoverageSpec("top50", 0.5)));
  JobSpec typo = CoverageSpec("top50", 0.5);
  typo.selection.disabled_layers = {"*no_such_module*"};
  absl::Status s = runner.Validate(typo);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("*no_such_module*"));
  JobSpec none;  // no selection at all
  none.scheme = "none";
  EXPECT_EQ(runner.Validate(none).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(root_ / "top50"));  // validation writes nothing
}

// The shared layout's result: the scheme under the models root, the job id in
// its manifest, blobs recorded through the runner's BlobRecords, and the
// metrics of that layout (not the standalone writer's).
TEST_F(EngineJobRunnerTest, SharedSchemeRecordsItsResultAndBlobMetrics) {
  MemoryBlobRecords records;
  EngineJobRunner runner(engine_.get(), root_, nullptr, ExportLayout::kShared, &records);
  ASSERT_OK_AND_ASSIGN(JobResultInfo r, RunJob(runner, "j-shared", CoverageSpec("top50", 0.5)));
  EXPECT_EQ(r.output_dir, (root_ / "top50").string());
  EXPECT_GT(r.groups_total, 0);
  EXPECT_GT(r.groups_quantized, 0);
  EXPECT_LT(r.groups_quantized, r.groups_total);
  EXPECT_GT(r.effective_bits, 8);
  EXPECT_LT(r.effective_bits, 16);
  EXPECT_FALSE(r.baseline_reused);
  EXPECT_EQ(r.baseline_key.size(), 64u);
  for (const char* k :
       {"baseline_seconds", "export_seconds", "export_bytes", "export_tensor_bytes", "export_write_seconds",
        "export_check_seconds", "export_resident_weights", "baseline_peak_device_bytes", "blobs_reused",
        "blobs_written", "blobs_copied", "blob_records_failed"}) {
    EXPECT_THAT(r.metrics, Contains(Key(k))) << k;
  }
  for (const char* k :
       {"export_produce_seconds", "export_hash_seconds", "export_pwrite_seconds", "export_writer_threads"}) {
    EXPECT_THAT(r.metrics, Not(Contains(Key(k)))) << k;
  }
  EXPECT_GT(r.metrics.at("blobs_written"), 0);
  EXPECT_EQ(r.metrics.at("blob_records_failed"), 0);
  EXPECT_GT(r.metrics.at("export_bytes"), 0);
  EXPECT_GT(r.metrics.at("baseline_seconds"), 0);
  EXPECT_GT(records.size(), 0u);
  EXPECT_TRUE(fs::is_directory(root_ / ".autoquant" / "blobs"));

  // The engine's phases reach the job.
  EXPECT_THAT(Phases(), IsSupersetOf({"calibrate", "score", "search", "export"}));
  ASSERT_OK_AND_ASSIGN(SchemeManifest m, ReadSchemeManifest(root_ / "top50"));
  EXPECT_EQ(m.job_id, "j-shared");
  EXPECT_EQ(m.num_quantized, r.groups_quantized);
  ASSERT_OK(VerifySchemeIntegrity(root_ / "top50"));
}

TEST_F(EngineJobRunnerTest, StandaloneSchemeReportsItsWriterMetricsAndReusesTheBaseline) {
  EngineJobRunner runner(engine_.get(), root_, nullptr, ExportLayout::kShared);
  JobSpec first = CoverageSpec("top25", 0.25);
  first.layout = ExportLayout::kStandalone;
  ASSERT_OK_AND_ASSIGN(JobResultInfo a, RunJob(runner, "j-a", first));
  EXPECT_FALSE(a.baseline_reused);
  for (const char* k :
       {"export_produce_seconds", "export_hash_seconds", "export_pwrite_seconds", "export_writer_threads"}) {
    EXPECT_THAT(a.metrics, Contains(Key(k))) << k;
  }
  EXPECT_GE(a.metrics.at("export_writer_threads"), 1);
  EXPECT_THAT(a.metrics, Not(Contains(Key("blobs_written"))));
  EXPECT_FALSE(fs::exists(root_ / ".autoquant" / "blobs"));

  JobSpec second = CoverageSpec("top100", 1.0);
  second.layout = ExportLayout::kStandalone;
  ASSERT_OK_AND_ASSIGN(JobResultInfo b, RunJob(runner, "j-b", second));
  EXPECT_TRUE(b.baseline_reused);
  EXPECT_EQ(b.baseline_key, a.baseline_key);
  EXPECT_EQ(b.groups_quantized, b.groups_total);
  EXPECT_GT(b.groups_quantized, a.groups_quantized);
  EXPECT_EQ(engine_->scoring_passes(), 1);
}

// A job cut off after publishing (kill -9 before SUCCEEDED was recorded) finds
// its own verified scheme on the next attempt and keeps it; another job does
// not get to adopt it.
TEST_F(EngineJobRunnerTest, ReattemptKeepsTheSchemeItsEarlierAttemptPublished) {
  EngineJobRunner runner(engine_.get(), root_, nullptr, ExportLayout::kStandalone);
  JobSpec spec = CoverageSpec("top50", 0.5);
  ASSERT_OK_AND_ASSIGN(JobResultInfo first, RunJob(runner, "j-cut", spec));
  ASSERT_OK_AND_ASSIGN(TensorDigests before, ComputeTensorDigests(root_ / "top50"));
  const fs::path manifest = root_ / "top50" / "layer-sensitivity" / "top50_quant_manifest.json";
  const auto written = fs::last_write_time(manifest);

  ASSERT_OK_AND_ASSIGN(JobResultInfo again, RunJob(runner, "j-cut", spec, /*attempts=*/2));
  const RunnerEvent* kept = EventWith("kept ");
  ASSERT_NE(kept, nullptr);
  EXPECT_EQ(kept->phase, Phase::kExport);
  EXPECT_THAT(Phases(), Not(Contains("calibrate")));
  EXPECT_EQ(again.output_dir, first.output_dir);
  EXPECT_EQ(again.groups_quantized, first.groups_quantized);
  EXPECT_EQ(again.groups_total, first.groups_total);
  EXPECT_DOUBLE_EQ(again.effective_bits, first.effective_bits);
  EXPECT_EQ(again.baseline_key, first.baseline_key);
  EXPECT_TRUE(again.baseline_reused);
  EXPECT_EQ(fs::last_write_time(manifest), written);  // not written a second time
  ASSERT_OK_AND_ASSIGN(TensorDigests after, ComputeTensorDigests(root_ / "top50"));
  EXPECT_EQ(after.size(), before.size());

  // Another job asking for the same scheme without overwrite is refused.
  auto other = RunJob(runner, "j-other", spec, /*attempts=*/2);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kAlreadyExists) << other.status();
}

// If what the earlier attempt published no longer verifies, the re-attempt
// says so and writes the scheme again.
TEST_F(EngineJobRunnerTest, ReattemptRewritesItsSchemeWhenTheDigestsDoNotVerify) {
  EngineJobRunner runner(engine_.get(), root_, nullptr, ExportLayout::kStandalone);
  JobSpec spec = CoverageSpec("top50", 0.5);
  ASSERT_OK(RunJob(runner, "j-flip", spec).status());
  fs::path shard;
  for (const auto& e : fs::directory_iterator(root_ / "top50")) {
    if (e.path().extension() == ".safetensors") shard = e.path();
  }
  ASSERT_FALSE(shard.empty());
  fs::permissions(shard, fs::perms::owner_write, fs::perm_options::add);
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good());
    f.seekg(-1, std::ios::end);
    char c = 0;
    f.read(&c, 1);
    f.seekp(-1, std::ios::end);
    c = static_cast<char>(c ^ 0x5a);
    f.write(&c, 1);
  }
  ASSERT_FALSE(VerifySchemeIntegrity(root_ / "top50").ok());

  ASSERT_OK(RunJob(runner, "j-flip", spec, /*attempts=*/2).status());
  const RunnerEvent* warned = EventWith("do not verify");
  ASSERT_NE(warned, nullptr);
  EXPECT_TRUE(warned->warning);
  ASSERT_OK(VerifySchemeIntegrity(root_ / "top50"));
}

TEST_F(EngineJobRunnerTest, EvaluationWithoutAnEvaluatorFailsBeforeWritingAnything) {
  EngineJobRunner runner(engine_.get(), root_);
  JobSpec spec = CoverageSpec("top50", 0.5);
  spec.evaluate = true;
  auto r = RunJob(runner, "j-eval", spec);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("--eval-set"));
  EXPECT_FALSE(fs::exists(root_ / "top50"));

  JobSpec evaluate;
  evaluate.kind = JobKind::kEvaluate;
  evaluate.scheme = "top50";
  EXPECT_EQ(RunJob(runner, "j-eval2", evaluate).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EngineJobRunnerTest, CancelledJobLeavesNoScheme) {
  EngineJobRunner runner(engine_.get(), root_);
  std::atomic<bool> cancel{true};
  auto r = RunJob(runner, "j-cancel", CoverageSpec("top50", 0.5), 1, &cancel);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(fs::exists(root_ / "top50"));
}

}  // namespace
}  // namespace autoquant
