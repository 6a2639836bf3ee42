#include "core/engine/engine.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/io/checkpoint.h"
#include "core/io/tensor_digests.h"
#include "core/model/device.h"
#include "core/model/device_memory.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/model.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "core/quant/scheme_name.h"
#include "core/quant/sensitivity.h"
#include "core/scheme/export.h"
#include "core/scheme/manifests.h"
#include "core/util/elapsed.h"
#include "core/util/file_lock.h"
#include "core/util/hash.h"
#include "core/util/path_guard.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace fs = std::filesystem;

struct Engine::Impl {
  EngineOptions options;
  Checkpoint base;
  Qwen2_5_VLModel model{nullptr};
  CalibSet calib;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat32;
  std::string model_fp, calib_fp;
  mutable std::mutex cache_mu;  // guards `cache`: RPC threads read it while the worker fills it
  // Every Linear of the model, model order; fixed at Create (ValidateScheme reads it from other threads).
  std::vector<LinearDesc> linears;
  bool tied_head = false;
  std::map<std::string, Baseline> cache;
  int scoring_passes = 0;
  int64_t last_baseline_peak_bytes = 0;
  std::atomic<int64_t> peak_seen{0};  // highest peak reserved observed before any ResetPeak

  // The baselines' life, in GetBaseline's order (defined below, after the helpers they use).
  // The baseline held in memory, else in the cache directory (a bad entry is a warning, not an error).
  std::optional<Baseline> Remembered(const std::string& key, const ProgressFn& progress);
  // Takes the cache entry's lock (*lock), waiting while another process holds it; returns what that
  // process cached meanwhile, if anything. Without a usable cache: no lock and nothing (a warning).
  absl::StatusOr<std::optional<Baseline>> WaitForOthers(const std::string& key, const ProgressFn& progress,
                                                        const std::atomic<bool>* cancel, std::optional<FileLock>* lock);
  // Calibration, scoring, costs and ranking.
  absl::StatusOr<Baseline> Compute(const BaselineInputs& in, const std::string& key, const ProgressFn& progress,
                                   const std::atomic<bool>* cancel);
  // Into memory, and into the cache directory when there is one (a failed save is a warning).
  void Keep(const Baseline& b, const ProgressFn& progress);
};

namespace {

void Report(const ProgressFn& fn, Phase phase, double fraction, std::string message = "") {
  if (fn) fn(ProgressEvent{phase, fraction, std::move(message)});
}

// The config, and per file its name, its header bytes and its tensors' digests: the same bytes as
// hashing the files whole, but the tensors hash in parallel, and exports reuse their digests
// (tensor_digests.h) instead of hashing the base's unchanged tensors again.
absl::StatusOr<std::string> FingerprintCheckpoint(const Checkpoint& ckpt) {
  Sha256 h;
  h.Update("autoquant.model-fingerprint.v2\n");
  if (ckpt.config()) h.Update(ckpt.config()->dump());
  for (const auto& f : ckpt.files()) {
    h.Update(f->path().filename().string());
    h.Update(f->HeaderBytes());
    ASSIGN_OR_RETURN(std::vector<std::string> digests, TensorDigestsOf(*f));
    for (const auto& d : digests) h.Update(d);
  }
  return h.HexDigest();
}

// Peak bytes the CUDA caching allocator reserved since the last reset (0 on CPU).
int64_t PeakReserved(const torch::Device& d) { return DeviceMemoryNow(d).peak_reserved; }

void RaiseTo(std::atomic<int64_t>& v, int64_t x) {
  int64_t cur = v.load();
  while (x > cur && !v.compare_exchange_weak(cur, x)) {
  }
}

std::string SchemeNameFor(const SchemeRequest& r) {
  if (!r.scheme.empty()) return r.scheme;
  fs::path p = r.out_dir.lexically_normal();
  return p.has_filename() ? p.filename().string() : p.parent_path().filename().string();
}

}  // namespace

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options, const ProgressFn& progress) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (options.batch_size < 1) return absl::InvalidArgumentError("batch size must be at least 1");
  if (!options.baseline_cache.empty()) {
    // The cache is written into: it must not be inside the base model or be the calibration file.
    RETURN_IF_ERROR(
        CheckDisjoint(options.baseline_cache, "baseline cache",
                      {{options.model_dir, "the base model directory"}, {options.calib_path, "the calibration file"}}));
  }
  ASSIGN_OR_RETURN(impl->device, ParseDevice(options.device));
  ASSIGN_OR_RETURN(impl->dtype, ParseDtype(options.dtype, impl->device));
  Report(progress, Phase::kLoad, 0, "opening " + options.model_dir.string());
  ASSIGN_OR_RETURN(impl->base, Checkpoint::Open(options.model_dir));
  ASSIGN_OR_RETURN(impl->model, LoadQwen2_5_VL(impl->base, impl->device, impl->dtype));
  Report(progress, Phase::kLoad, 0.5, "loading calibration set " + options.calib_path.string());
  ASSIGN_OR_RETURN(impl->calib, CalibSet::Load(options.calib_path));
  RETURN_IF_ERROR(impl->calib.To(impl->device));
  ASSIGN_OR_RETURN(impl->model_fp, FingerprintCheckpoint(impl->base));
  Sha256 ch;
  RETURN_IF_ERROR(HashFile(options.calib_path, &ch));
  ASSIGN_OR_RETURN(impl->calib_fp, ch.HexDigest());
  impl->tied_head = impl->model->config().tie_word_embeddings;
  for (const auto& [name, lin] : impl->model->Linears()) {
    impl->linears.push_back({name, lin->weight.numel(), lin->out_features(), lin->in_features()});
  }
  Report(progress, Phase::kLoad, 1.0, "model and calibration set loaded");
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

int Engine::scoring_passes() const { return impl_->scoring_passes; }
Qwen2_5_VLModel& Engine::resident_model() { return impl_->model; }
const CalibSet& Engine::calib_set() const { return impl_->calib; }
std::string Engine::device() const { return impl_->device.str(); }
std::string Engine::dtype() const { return impl_->dtype == torch::kBFloat16 ? "bfloat16" : "float32"; }
const std::string& Engine::model_fingerprint() const { return impl_->model_fp; }
const std::string& Engine::calib_fingerprint() const { return impl_->calib_fp; }
int64_t Engine::calib_samples() const { return impl_->calib.num_samples(); }
const EngineOptions& Engine::options() const { return impl_->options; }

std::optional<Baseline> Engine::Impl::Remembered(const std::string& key, const ProgressFn& progress) {
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  if (options.baseline_cache.empty()) return std::nullopt;
  auto loaded = LoadBaseline(options.baseline_cache, key);
  if (loaded.ok()) {
    std::lock_guard<std::mutex> lock(cache_mu);
    cache[key] = *loaded;
    return *std::move(loaded);
  }
  // A bad entry costs a recomputation, not the scheme; but say so: silence would hide a cache
  // directory that keeps getting damaged.
  if (!absl::IsNotFound(loaded.status()) && progress) {
    progress(
        ProgressEvent{Phase::kCalibrate, 0,
                      absl::StrCat("ignoring the cached baseline (", loaded.status().ToString(), "); recomputing it"),
                      /*warning=*/true});
  }
  return std::nullopt;
}

absl::StatusOr<std::optional<Baseline>> Engine::Impl::WaitForOthers(const std::string& key, const ProgressFn& progress,
                                                                    const std::atomic<bool>* cancel,
                                                                    std::optional<FileLock>* lock) {
  if (options.baseline_cache.empty()) return std::nullopt;
  std::error_code no_cache;
  std::filesystem::create_directories(options.baseline_cache, no_cache);
  // (A cache directory that cannot be created is reported once, by Keep's save.)
  if (no_cache) return std::nullopt;
  auto locked = FileLock::Acquire(options.baseline_cache / (".baseline-" + key + ".lock"), cancel, [&] {
    if (progress) {
      progress(ProgressEvent{Phase::kCalibrate, 0,
                             absl::StrCat("another process is computing baseline ", key.substr(0, 12),
                                          " in the shared cache; waiting to use it")});
    }
  });
  if (absl::IsCancelled(locked.status())) return locked.status();
  if (!locked.ok()) {
    if (progress) {
      progress(ProgressEvent{Phase::kCalibrate, 0,
                             absl::StrCat("cannot lock the baseline cache (", locked.status().message(),
                                          "); computing without it, so another daemon may compute it too"),
                             /*warning=*/true});
    }
    return std::nullopt;
  }
  lock->emplace(*std::move(locked));
  auto loaded = LoadBaseline(options.baseline_cache, key);
  if (!loaded.ok()) return std::nullopt;
  std::lock_guard<std::mutex> l(cache_mu);
  cache[key] = *loaded;
  return *std::move(loaded);
}

absl::StatusOr<Baseline> Engine::Impl::Compute(const BaselineInputs& in, const std::string& key,
                                               const ProgressFn& progress, const std::atomic<bool>* cancel) {
  Baseline b;
  b.key = key;
  b.inputs = in;
  ASSIGN_OR_RETURN(b.formats, CandidateFormats(in.formats));
  b.linears = linears;
  ASSIGN_OR_RETURN(b.groups, QuantizableGroups(b.linears, in.include_vision, tied_head));
  RETURN_IF_ERROR(CheckFormatsFit(b.formats, b.linears, b.groups));

  RaiseTo(peak_seen, PeakReserved(device));
  ResetPeakReserved(device);
  auto t0 = std::chrono::steady_clock::now();
  PassOptions calib_opts{in.calib_steps, in.batch_size, cancel,
                         [&](double f) { Report(progress, Phase::kCalibrate, f); }};
  ASSIGN_OR_RETURN(CalibrationResult amax, Calibrate(model, calib, calib_opts));
  b.calib_seconds = Seconds(t0);
  auto t1 = std::chrono::steady_clock::now();
  PassOptions score_opts{in.score_steps, in.batch_size, cancel, [&](double f) { Report(progress, Phase::kScore, f); }};
  score_opts.graph_bytes = options.score_graph_bytes;
  ++scoring_passes;
  ASSIGN_OR_RETURN(std::vector<std::vector<double>> scores,
                   ScoreGroups(model, calib, in.method, b.groups, b.formats, amax, score_opts));
  b.score_seconds = Seconds(t1);
  last_baseline_peak_bytes = PeakReserved(device);
  RaiseTo(peak_seen, last_baseline_peak_bytes);

  // Max calibration does not depend on the format: every format's quantizers see the same amax.
  b.input_amax.assign(b.formats.size() - 1, amax.input_amax);
  b.weight_amax.assign(b.formats.size() - 1, amax.weight_amax);
  b.scores = std::move(scores);
  for (const auto& g : b.groups) {
    std::vector<double> costs;
    for (Format f : b.formats) costs.push_back(Baseline::Cost(g.weight_numel, f));
    b.costs.push_back(std::move(costs));
    b.total_weight_numel += g.weight_numel;
  }
  b.ComputeRanking();
  return b;
}

void Engine::Impl::Keep(const Baseline& b, const ProgressFn& progress) {
  if (!options.baseline_cache.empty()) {
    // Losing the cache costs the next process a recomputation; losing the baseline just computed
    // would cost this one.
    if (absl::Status saved = SaveBaseline(b, options.baseline_cache); !saved.ok() && progress) {
      progress(ProgressEvent{Phase::kScore, 1.0,
                             absl::StrCat("baseline not cached (", saved.message(), "); using it from memory"),
                             /*warning=*/true});
    }
  }
  std::lock_guard<std::mutex> lock(cache_mu);
  cache[b.key] = b;
}

absl::StatusOr<Baseline> Engine::GetBaseline(const BaselineRequest& request, const ProgressFn& progress,
                                             const std::atomic<bool>* cancel, bool* reused) {
  Impl& s = *impl_;
  ASSIGN_OR_RETURN(BaselineInputs in, InputsFor(request));
  ASSIGN_OR_RETURN(const std::string key, BaselineKey(in));
  if (reused) *reused = true;
  if (std::optional<Baseline> b = s.Remembered(key, progress)) return *std::move(b);
  // Another process sharing the cache (a daemon of the same fleet, the CLI) may be computing this very
  // baseline right now: wait for it and use what it cached rather than compute it a second time.
  std::optional<FileLock> lock;
  ASSIGN_OR_RETURN(std::optional<Baseline> theirs, s.WaitForOthers(key, progress, cancel, &lock));
  if (theirs) return *std::move(theirs);
  if (reused) *reused = false;
  ASSIGN_OR_RETURN(Baseline b, s.Compute(in, key, progress, cancel));
  s.Keep(b, progress);
  return b;
}

absl::StatusOr<BaselineInputs> Engine::InputsFor(const BaselineRequest& request) const {
  const Impl& s = *impl_;
  const int calib_steps = request.calib_steps, score_steps = request.score_steps;
  int batch_size = request.batch_size;
  if (calib_steps < 0 || score_steps < 0) return absl::InvalidArgumentError("step counts must be >= 0");
  if (batch_size < 0) return absl::InvalidArgumentError("the batch size must be >= 0 (0 = the default)");
  if (batch_size == 0) batch_size = s.options.batch_size;
  const int batches = static_cast<int>(s.calib.BatchRanges(batch_size).size());
  BaselineInputs in;
  in.model_fingerprint = s.model_fp;
  in.calib_fingerprint = s.calib_fp;
  in.method = request.method;
  ASSIGN_OR_RETURN(std::vector<Format> candidates, CandidateFormats(request.formats));
  in.formats.assign(candidates.begin(), candidates.end() - 1);
  in.calib_steps = calib_steps == 0 ? batches : std::min(calib_steps, batches);
  in.score_steps = score_steps == 0 ? std::min(batches, std::max(1, 128 / batch_size)) : std::min(score_steps, batches);
  in.batch_size = batch_size;
  in.include_vision = request.include_vision;
  in.compute_dtype = dtype();
  return in;
}

absl::StatusOr<Baseline> Engine::CachedBaseline(const BaselineRequest& request) const {
  ASSIGN_OR_RETURN(BaselineInputs in, InputsFor(request));
  ASSIGN_OR_RETURN(const std::string key, BaselineKey(in));
  {
    std::lock_guard<std::mutex> lock(impl_->cache_mu);
    if (auto it = impl_->cache.find(key); it != impl_->cache.end()) return it->second;
  }
  if (!impl_->options.baseline_cache.empty()) {
    auto loaded = LoadBaseline(impl_->options.baseline_cache, key);
    if (loaded.ok()) return loaded;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no ", ScoreMethodName(request.method),
                   " baseline for these settings has been computed yet; submit a scheme "
                   "with the same method, steps and formats first"));
}

std::vector<std::string> Engine::cached_baseline_keys() const {
  std::lock_guard<std::mutex> lock(impl_->cache_mu);
  std::vector<std::string> keys;
  for (const auto& [k, _] : impl_->cache) keys.push_back(k);
  return keys;
}

DeviceMemory Engine::device_memory() const {
  DeviceMemory m;  // all 0 on the CPU, as DeviceMemoryNow's
  const DeviceMemoryStats now = DeviceMemoryNow(impl_->device);
  // total: the denominator of the "device memory near its limit" alert (deploy/prometheus/rules.yml).
  m.total = now.total;
  m.allocated = now.allocated;
  m.reserved = now.reserved;
  m.peak_reserved = std::max<int64_t>(impl_->peak_seen.load(), now.peak_reserved);
  return m;
}

absl::Status Engine::WarmUp() {
  Impl& s = *impl_;
  if (s.calib.num_samples() == 0) return absl::FailedPreconditionError("the calibration set is empty");
  ASSIGN_OR_RETURN(Qwen2_5_VLInputs in, s.calib.Sample(0));
  return TorchCall(
      [&]() -> absl::Status {
        torch::InferenceMode guard;
        ASSIGN_OR_RETURN(torch::Tensor logits, s.model->Forward(in));
        if (!torch::isfinite(logits).all().item<bool>()) {
          return absl::InternalError("warm-up forward produced non-finite logits; check the model weights");
        }
        return absl::OkStatus();
      },
      "warm-up forward");
}

absl::Status Engine::ValidateScheme(const SchemeRequest& request) const {
  const Impl& s = *impl_;
  if (request.out_dir.empty()) return absl::InvalidArgumentError("the output directory is required");
  const std::string scheme = SchemeNameFor(request);
  if (absl::Status name = ValidateSchemeName(scheme); !name.ok()) {
    return request.scheme.empty() ? absl::InvalidArgumentError(absl::StrCat(name.message(),
                                                                            " (the scheme name defaults to the output "
                                                                            "directory's name; pass --scheme NAME)"))
                                  : name;
  }
  RETURN_IF_ERROR(CheckOutputPath({.path = request.out_dir,
                                   .kind = OutputKind::kDirectory,
                                   .overwrite = request.overwrite,
                                   .what = "output directory",
                                   .is_ours = RecogniseSchemeOutput},
                                  {{s.options.model_dir, "the base model directory"},
                                   {s.options.calib_path, "the calibration file"},
                                   {s.options.baseline_cache, "the baseline cache"},
                                   {s.options.eval_set, "the evaluation set"}}));
  if (request.layout == ExportLayout::kShared && request.blob_store.empty()) {
    return absl::InvalidArgumentError("the shared layout needs a blob store directory (or choose standalone)");
  }
  RETURN_IF_ERROR(ValidateSchemeSpec(request));
  ASSIGN_OR_RETURN(std::vector<QuantGroup> groups, QuantizableGroups(s.linears, request.include_vision, s.tied_head));
  ASSIGN_OR_RETURN(std::vector<Format> formats, CandidateFormats(request.formats));
  RETURN_IF_ERROR(CheckFormatsFit(formats, s.linears, groups));
  return SelectCandidates(request.selection, s.linears, groups, request.include_vision, formats).status();
}

absl::StatusOr<SchemeResult> Engine::RunScheme(const SchemeRequest& request, const ProgressFn& progress,
                                               const std::atomic<bool>* cancel) {
  RETURN_IF_ERROR(ValidateScheme(request));
  SchemeResult r;
  r.out_dir = request.out_dir;
  r.scheme = SchemeNameFor(request);
  r.format = request.format;
  if (request.format == ExportFormat::kModelOpt && progress) {
    progress(
        ProgressEvent{Phase::kLoad, 1.0,
                      "format modelopt: for vLLM / TensorRT-LLM only; transformers cannot load it (it drops "
                      "the FP8 scales and computes wrong logits); use --format compressed-tensors for transformers",
                      /*warning=*/true});
  }
  auto t0 = std::chrono::steady_clock::now();
  bool reused = false;
  ASSIGN_OR_RETURN(Baseline b, GetBaseline(BaselineRequestOf(request), progress, cancel, &reused));
  r.baseline_seconds = reused ? 0 : Seconds(t0);
  r.baseline_peak_device_bytes = reused ? 0 : impl_->last_baseline_peak_bytes;
  r.baseline_reused = reused;
  r.baseline_key = b.key;

  Report(progress, Phase::kSearch, 0);
  ASSIGN_OR_RETURN(Plan plan, MakePlan(b, request.selection));
  Report(progress, Phase::kSearch, 1,
         absl::StrCat(plan.num_quantized(b), " of ", b.groups.size(), " groups quantized (", PlanFormatCounts(plan, b),
                      ")"));

  auto t1 = std::chrono::steady_clock::now();
  ExportOptions eo;
  eo.scheme = r.scheme;
  eo.out_dir = request.out_dir;
  eo.format = request.format;
  eo.overwrite = request.overwrite;
  eo.job_id = request.job_id;
  eo.publish_gate = request.publish_gate;
  eo.disabled_by_request = request.selection.disabled_layers;
  eo.layout = request.layout.value_or(ExportLayout::kStandalone);
  eo.quantize_device = impl_->device;
  for (const auto& [name, lin] : impl_->model->Linears()) eo.resident_weights[name] = lin->weight;
  if (impl_->device.is_cuda()) {
    // The producing threads and the writers share the CPU. On 16 logical CPUs beside the 4 producing
    // threads (which quantize with fused kernels, synchronize once per weight and hash what they made),
    // top100 took 1.71 / 1.24 / 1.27 s with 4 / 6 / 8 writer threads and top10 1.21 / 0.63 / 0.49 s
    // (bench/results/2026-11-24-h200-baseline): half the logical CPUs less 2, from 2 to 8.
    eo.fp8_prefetch_bytes = 512ull << 20;
    const int half = static_cast<int>(std::max(4u, std::thread::hardware_concurrency()) / 2);
    eo.writer_threads = std::clamp(half - 2, 2, 8);
  }
  if (impl_->options.export_threads > 0) eo.writer_threads = impl_->options.export_threads;
  eo.blob_store = request.blob_store;
  eo.blob_store_below = request.blob_store_below;
  eo.blob_records = request.blob_records;
  eo.cancel = cancel;
  eo.progress = [&](double f) { Report(progress, Phase::kExport, f); };
  ASSIGN_OR_RETURN(ExportResult exported, ExportScheme(impl_->base, b, plan, eo));
  r.export_seconds = Seconds(t1);
  r.export_bytes = exported.bytes_written;
  r.export_tensor_bytes = exported.tensor_bytes;
  r.layout = exported.layout;
  r.blobs_reused = exported.blobs_reused;
  r.blobs_written = exported.blobs_written;
  r.blobs_copied = exported.blobs_copied;
  r.blob_records_failed = exported.blob_records_failed;
  r.export_write_seconds = exported.write_seconds;
  r.export_check_seconds = exported.check_seconds;
  r.export_produce_seconds = exported.writer.produce;
  r.export_hash_seconds = exported.writer.hash;
  r.export_pwrite_seconds = exported.writer.write;
  r.export_writer_threads = exported.writer_threads;
  r.export_resident_weights = exported.resident_weights;
  r.effective_bits = plan.effective_bits;
  r.groups_quantized = plan.num_quantized(b);
  r.groups_total = b.groups.size();
  return r;
}

}  // namespace autoquant
