#include "core/scheme/export.h"

#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/io/checkpoint_writer.h"
#include "core/io/tensor_digests.h"
#include "core/io/torch_dtype.h"
#include "core/model/qwen2_5_vl/architecture.h"
#include "core/quant/nvfp4.h"
#include "core/scheme/fp8_prefetch.h"
#include "core/scheme/fp8_storage.h"
#include "core/scheme/integrity.h"
#include "core/scheme/manifests.h"
#include "core/scheme/nvfp4_storage.h"
#include "core/scheme/shared_export.h"
#include "core/util/crash_point.h"
#include "core/util/elapsed.h"
#include "core/util/file_util.h"
#include "core/util/hash.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace fs = std::filesystem;
using json = nlohmann::json;

absl::StatusOr<std::string> CheckpointModuleName(const Checkpoint& base, const std::string& module) {
  // A compressed-tensors NVFP4 Linear stores its weight as weight_packed.
  auto has_weight = [&](const std::string& m) {
    return base.Find(m + ".weight") != nullptr || base.Find(m + ".weight_packed") != nullptr;
  };
  if (has_weight(module)) return module;
  const std::string legacy = qwen2_5_vl::CheckpointKey(module, qwen2_5_vl::KeyLayout::kLegacy);
  if (has_weight(legacy)) return legacy;
  return absl::NotFoundError(absl::StrCat("module '", module, "' has no weight in checkpoint ", base.path().string(),
                                          " (tried '", module, ".weight' and '", legacy, ".weight')"));
}

namespace {

// The module names a quantization config lists. transformers (and
// llm-compressor) match compressed-tensors' `ignore` against the in-memory
// module names, which are transformers 5.x names whatever the checkpoint's key
// layout; ModelOpt configs name checkpoint modules (vLLM maps both layouts).
std::string ConfigModuleName(ExportFormat format, const std::string& ckpt_name, const std::string& model_name) {
  return format == ExportFormat::kCompressedTensors ? model_name : ckpt_name;
}

// A quantized Linear, by checkpoint module name.
struct QuantizedModule {
  Format format = Format::kNone;
  float input_amax = 0;
  float weight_amax = 0;   // NVFP4's global scale; FP8 takes its scale from the weight itself
  torch::Tensor resident;  // the same bytes in the resident model, if it holds them
};

// The resident copy of checkpoint weight `info`, when it is the checkpoint's bytes: same dtype and shape
// (the loader then copied it verbatim; a model loaded in another dtype holds converted values).
torch::Tensor ResidentCopy(const ExportOptions& options, const std::string& linear, const TensorInfo& info) {
  auto it = options.resident_weights.find(linear);
  if (it == options.resident_weights.end() || !it->second.defined()) return {};
  const torch::Tensor& t = it->second;
  if (t.scalar_type() != ToTorch(info.dtype) || t.sizes() != c10::IntArrayRef(info.shape) ||
      t.layout() != torch::kStrided) {
    return {};
  }
  return t.detach();
}

// One of a fixed few streams of `device`, the same for a thread's every call: the caching allocator keeps
// freed blocks per stream, so a stream per call (or per short-lived writer thread) would leave gigabytes
// cached on streams nothing uses again.
c10::cuda::CUDAStream QuantizeStream(const torch::Device& device) {
  constexpr unsigned kStreams = 4;
  static std::mutex mu;
  static std::map<int, std::vector<c10::cuda::CUDAStream>> streams;
  static std::atomic<unsigned> next_slot{0};
  thread_local const unsigned slot = next_slot++ % kStreams;
  const int index = device.has_index() ? device.index() : c10::cuda::current_device();
  std::lock_guard<std::mutex> lock(mu);
  auto& v = streams[index];
  while (v.size() < kStreams) v.push_back(c10::cuda::getStreamFromPool(false, index));
  return v[slot];
}

// Page-locked host memory shaped like `t`: device copies into and out of it run asynchronously on the
// quantizing stream (pageable ones go through the driver's staging buffers, one copy at a time, which
// left the writer's threads waiting on each other). The caching host allocator keeps the blocks.
torch::Tensor PinnedLike(const torch::Tensor& t) {
  return torch::empty(t.sizes(), t.options().device(torch::kCPU).pinned_memory(true));
}

// One weight in the stored form of its format.
absl::StatusOr<StoredWeight> StoreWeight(const torch::Tensor& w, const QuantizedModule& q, ExportFormat format) {
  if (IsNvfp4(q.format)) return QuantizeNvfp4ForExport(w, q.weight_amax);
  return QuantizeForExport(w, format);
}

// `w` (the base weight: resident, or mapped from the checkpoint) quantized on `device`, on the host.
absl::StatusOr<StoredWeight> QuantizedWeight(torch::Tensor w, const QuantizedModule& qm, ExportFormat format,
                                             const torch::Device& device) {
  if (!device.is_cuda()) {
    ASSIGN_OR_RETURN(w, TorchCall([&] { return w.to(device); }, "copy of a weight to the quantizing device"));
    return StoreWeight(w, qm, format);
  }
  return TorchCall(
      [&]() -> absl::StatusOr<StoredWeight> {
        // The writer's workers quantize at once: each on a stream of its own, so that their copies and
        // kernels overlap instead of queueing on the default stream. Every use of the result is inside
        // this scope (and a stream that cannot be had is an error, not an exception on a writer thread).
        c10::cuda::CUDAStreamGuard own_stream(QuantizeStream(device));
        torch::Tensor d = w;
        if (!w.is_cuda()) {
          torch::Tensor staged = PinnedLike(w);
          staged.copy_(w);  // the mapped file's pages, copied by this worker while the others do theirs
          d = staged.to(device, /*non_blocking=*/true);
        } else if (w.device() != device) {
          d = w.to(device);
        }
        ASSIGN_OR_RETURN(StoredWeight q, StoreWeight(d, qm, format));
        // Codes and scale come back in one synchronization.
        StoredWeight host{PinnedLike(q.weight), PinnedLike(q.weight_scale)};
        host.weight.copy_(q.weight, /*non_blocking=*/true);
        host.weight_scale.copy_(q.weight_scale, /*non_blocking=*/true);
        c10::cuda::getCurrentCUDAStream().synchronize();
        return host;
      },
      "quantization of a weight on the GPU");
}

// Compares the written checkpoint's tensors with the plan: the same names,
// and each with its planned dtype (FP8 exactly where the plan quantizes) and
// shape. Reads headers only; the bytes are checked through their digests.
absl::Status CheckPlannedTensors(const fs::path& dir, const std::vector<PlannedTensor>& tensors) {
  ASSIGN_OR_RETURN(Checkpoint out, Checkpoint::Open(dir));
  std::set<std::string> planned;
  for (const auto& t : tensors) {
    planned.insert(t.spec.name);
    const TensorInfo* got = out.Find(t.spec.name);
    if (got == nullptr) return absl::InternalError(absl::StrCat("self-check: tensor '", t.spec.name, "' missing"));
    if (got->dtype != t.spec.dtype || got->shape != t.spec.shape) {
      return absl::InternalError(absl::StrCat("self-check: '", t.spec.name, "' is ", DTypeName(got->dtype),
                                              " where the plan writes ", DTypeName(t.spec.dtype)));
    }
  }
  for (const auto& name : out.TensorNames()) {
    if (!planned.count(name)) return absl::InternalError(absl::StrCat("self-check: unexpected tensor '", name, "'"));
  }
  return absl::OkStatus();
}

// A piece description's line for one tensor: name, dtype and shape.
std::string TensorLine(const TensorSpec& spec) {
  return absl::StrCat("tensor ", spec.name, " ", DTypeName(spec.dtype), " [", absl::StrJoin(spec.shape, ","), "]\n");
}

// The shared layout's pieces: one per layer group (its Linears' tensors, in
// the version the plan gives the group), then the rest of the model in shards.
// Descriptions name everything the bytes depend on.
absl::StatusOr<std::vector<SharedPiece>> SharedPieces(const Baseline& b, const std::vector<PlannedTensor>& tensors,
                                                      const std::map<std::string, size_t>& module_group,
                                                      const std::map<std::string, QuantizedModule>& quantized,
                                                      const ExportOptions& options) {
  if (b.inputs.model_fingerprint.empty()) {
    return absl::FailedPreconditionError("the shared layout needs the base model's fingerprint; export standalone");
  }
  const std::string head = absl::StrCat("model ", b.inputs.model_fingerprint, "\n");
  std::map<size_t, SharedPiece> groups;
  std::map<size_t, Format> group_format;  // the quantized groups' formats
  std::vector<PlannedTensor> rest;
  std::vector<size_t> rest_index;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string& name = tensors[i].spec.name;
    const std::string module = name.substr(0, name.rfind('.'));
    auto g = module_group.find(module);
    if (g == module_group.end()) {
      rest.push_back(tensors[i]);
      rest_index.push_back(i);
      continue;
    }
    SharedPiece& piece = groups[g->second];
    piece.tensors.push_back(i);
    absl::StrAppend(&piece.description, TensorLine(tensors[i].spec));
    auto q = quantized.find(module);
    if (q == quantized.end()) continue;
    group_format[g->second] = q->second.format;
    // Scales computed from calibration name the amax they come from.
    if (absl::EndsWith(name, ".input_scale") || absl::EndsWith(name, ".input_global_scale")) {
      absl::StrAppend(&piece.description, "input_amax ", absl::StrFormat("%a", q->second.input_amax), "\n");
    }
    if (absl::EndsWith(name, ".weight_scale_2") || absl::EndsWith(name, ".weight_global_scale")) {
      absl::StrAppend(&piece.description, "weight_amax ", absl::StrFormat("%a", q->second.weight_amax), "\n");
    }
  }
  std::vector<SharedPiece> out;
  for (auto& [g, piece] : groups) {
    // The quantizer's identity is part of a quantized piece: the storage file's rule and the format's scales.
    std::string quant;
    const Format format = group_format.count(g) ? group_format[g] : Format::kNone;
    if (format == Format::kFp8) {
      quant = absl::StrCat("quantizer fp8-e4m3 per-tensor v1 format ", ExportFormatName(options.format), "\n");
    } else if (IsQuantized(format)) {
      quant = absl::StrCat("quantizer ", FormatName(format), " e2m1-block16-e4m3 v1 format ",
                           ExportFormatName(options.format), "\n");
    }
    piece.description = absl::StrCat(head, "group ", b.groups[g].key, "\n", quant, piece.description);
    out.push_back(std::move(piece));
  }
  for (const auto& shard : PlanShards(rest, options.max_shard_bytes)) {
    SharedPiece piece;
    piece.description = absl::StrCat(head, "rest\n");
    for (size_t k : shard) {
      piece.tensors.push_back(rest_index[k]);
      absl::StrAppend(&piece.description, TensorLine(rest[k].spec));
    }
    if (!piece.tensors.empty()) out.push_back(std::move(piece));
  }
  return out;
}

// The scheme's README.md: what it is and what loads it. A modelopt scheme
// says plainly that transformers cannot load it: transformers 5.x has no
// modelopt quantizer and loads the raw FP8 codes without their scales.
std::string SchemeReadme(const std::string& scheme, ExportFormat format) {
  std::string out = absl::StrCat("# ", scheme, "\n\nAn FP8 scheme written by autoquant ", AUTOQUANT_VERSION,
                                 " in the `", ExportFormatName(format), "` format. ",
                                 "`layer-sensitivity/` says which groups are FP8 and why, and records the SHA-256 of "
                                 "every tensor (`autoquant diff` verifies them).\n\n");
  if (format == ExportFormat::kCompressedTensors) {
    absl::StrAppend(&out,
                    "Loads in transformers (>= 5.0, with `compressed-tensors` installed) through "
                    "`Qwen2_5_VLForConditionalGeneration.from_pretrained`, in the checkpoint's own dtype, and in "
                    "vLLM.\n");
  } else {
    absl::StrAppend(&out,
                    "Loads in vLLM and TensorRT-LLM. **Do not load it with transformers**: transformers has no "
                    "`modelopt` quantizer, warns \"Unknown quantization type\" and reads the FP8 codes without their "
                    "scales, so its outputs are wrong. For transformers, export with `--format "
                    "compressed-tensors` (the default).\n");
  }
  return out;
}

// Step 1, the plan as modules: which checkpoint modules are quantized (with their calibration and resident
// copies), which group each belongs to, and every Linear as the quantization configs list it.
struct ModulePlan {
  std::map<std::string, QuantizedModule> quantized;  // by checkpoint module name
  std::map<std::string, size_t> module_group;        // checkpoint module -> group
  std::vector<LayerQuant> layers;
};

absl::StatusOr<ModulePlan> PlanModules(const Checkpoint& base, const Baseline& b, const Plan& plan,
                                       const ExportOptions& options) {
  ModulePlan mp;
  for (size_t g = 0; g < b.groups.size(); ++g) {
    const size_t f = plan.format[g];
    const Format fmt = b.formats[f];
    // A group is a fused GEMM's shards: NVFP4 gives them one global scale for weights and one for inputs.
    float group_input_amax = 0, group_weight_amax = 0;
    if (IsQuantized(fmt)) {
      for (size_t li : b.groups[g].linear_index) {
        group_input_amax = std::max(group_input_amax, b.input_amax[f][li]);
        group_weight_amax = std::max(group_weight_amax, b.weight_amax[f][li]);
      }
    }
    for (size_t li : b.groups[g].linear_index) {
      ASSIGN_OR_RETURN(std::string ckpt, CheckpointModuleName(base, b.linears[li].name));
      mp.module_group[ckpt] = g;
      mp.layers.push_back({ConfigModuleName(options.format, ckpt, b.linears[li].name), fmt});
      if (!IsQuantized(fmt)) continue;
      const TensorInfo* info = base.Find(ckpt + ".weight");
      QuantizedModule q{fmt, b.input_amax[f][li], b.weight_amax[f][li],
                        ResidentCopy(options, b.linears[li].name, *info)};
      if (IsNvfp4(fmt)) {
        q.input_amax = group_input_amax;
        q.weight_amax = group_weight_amax;
      }
      mp.quantized[ckpt] = std::move(q);
    }
  }
  // Linears outside every group (the vision tower when excluded) are unquantized layers too.
  std::set<std::string> grouped;
  for (const auto& g : b.groups) grouped.insert(g.modules.begin(), g.modules.end());
  for (const auto& l : b.linears) {
    if (grouped.count(l.name)) continue;
    // A tied lm_head has no weight of its own in the checkpoint; it is still a
    // Linear that engines must leave unquantized, so it is listed by name.
    auto ckpt = CheckpointModuleName(base, l.name);
    mp.layers.push_back({ConfigModuleName(options.format, ckpt.ok() ? *ckpt : l.name, l.name), Format::kNone});
  }
  return mp;
}

// Step 2, the plan as tensors: base order, each quantized weight followed by its scales, with what each
// tensor's digest is known as.
struct TensorPlan {
  std::vector<PlannedTensor> tensors;
  // Digest keys (tensor_digests.h) of the tensors that are a function of one base tensor: the base's own
  // bytes, and FP8 weights ("<name>#fp8-<format>"); "" for the rest. Known digests are not hashed again.
  std::vector<std::pair<const SafetensorsFile*, std::string>> digest_keys;
  // The FP8 weights' producers, in plan order. A standalone export on the GPU runs them ahead of the writer
  // (fp8_prefetch.h) and the tensors' producers take the results; otherwise each runs in its tensor's.
  std::vector<Fp8Prefetcher::Producer> fp8_sources;
  std::shared_ptr<std::unique_ptr<Fp8Prefetcher>> prefetcher = std::make_shared<std::unique_ptr<Fp8Prefetcher>>();
};

// The producer of one FP8 weight. Producers run on helper threads, where an exception would end the process:
// everything, making the quantizing device theirs included, runs inside TorchCall. `hash`: a standalone
// writer needs the digest of bytes it does not know, hashed here (on the GPU, on a prefetch thread while the
// writer threads write).
Fp8Prefetcher::Producer WeightProducer(const Checkpoint& base, const std::string& name, QuantizedModule qm,
                                       ExportFormat f, torch::Device device, bool hash) {
  return [&base, name, qm = std::move(qm), f, device, hash]() -> absl::StatusOr<StoredWeight> {
    return TorchCall(
        [&]() -> absl::StatusOr<StoredWeight> {
          c10::OptionalDeviceGuard guard(device.is_cuda() ? std::optional<c10::Device>(device) : std::nullopt);
          torch::Tensor w = qm.resident;
          if (!w.defined()) {
            ASSIGN_OR_RETURN(w, base.Get(name));
          }
          ASSIGN_OR_RETURN(StoredWeight q, QuantizedWeight(std::move(w), qm, f, device));
          if (hash && q.weight.device().is_cpu() && q.weight.is_contiguous()) {
            Sha256 h;
            h.Update(q.weight.const_data_ptr(), static_cast<size_t>(q.weight.nbytes()));
            ASSIGN_OR_RETURN(q.weight_sha256, h.HexDigest());
          }
          return q;
        },
        "quantizing a weight for export");
  };
}

TensorPlan PlanTensors(const Checkpoint& base, const ModulePlan& mp, const ExportOptions& options) {
  TensorPlan tp;
  auto known_digest = [&](const std::string& base_name, std::string key) {
    const SafetensorsFile* file = base.FileOf(base_name);
    std::optional<std::string> hex = file ? RememberedDigest(*file, key) : std::nullopt;
    tp.digest_keys.emplace_back(file, std::move(key));
    return hex.value_or("");
  };
  for (const auto& name : base.TensorNames()) {
    const TensorInfo* info = base.Find(name);
    std::string module = absl::EndsWith(name, ".weight") ? name.substr(0, name.size() - 7) : "";
    auto q = mp.quantized.find(module);
    if (q == mp.quantized.end()) {
      tp.tensors.push_back({{name, info->dtype, info->shape}, [&base, name] { return base.Get(name); }});
      tp.tensors.back().sha256 = known_digest(name, name);
      continue;
    }
    // The weight's producer leaves its scale here for the next tensor's.
    auto stored = std::make_shared<StoredWeight>();
    const QuantizedModule& qm = q->second;
    const ExportFormat f = options.format;
    const bool nvfp4 = IsNvfp4(qm.format);
    const size_t k = tp.fp8_sources.size();
    // The stored bytes are a function of the base tensor and, for NVFP4, of the (fused GEMM's) weight amax.
    const std::string digest_key =
        nvfp4 ? absl::StrCat(name, "#nvfp4-", ExportFormatName(f), "-", absl::StrFormat("%a", qm.weight_amax))
              : absl::StrCat(name, "#fp8-", ExportFormatName(f));
    std::string known = known_digest(name, digest_key);
    const bool hash = known.empty() && options.layout == ExportLayout::kStandalone;
    tp.fp8_sources.push_back(WeightProducer(base, name, qm, f, options.quantize_device, hash));
    TensorSpec weight_spec{name, DType::kF8E4M3, info->shape};
    if (nvfp4) {
      weight_spec = {absl::StrCat(module, ".", Nvfp4WeightName(f)), DType::kU8, info->shape};
      weight_spec.shape.back() /= 2;
    }
    tp.tensors.push_back(
        {weight_spec,
         [source = tp.fp8_sources.back(), prefetcher = tp.prefetcher, k, stored]() -> absl::StatusOr<torch::Tensor> {
           if (*prefetcher) {
             ASSIGN_OR_RETURN(*stored, (*prefetcher)->Take(k));
           } else {
             ASSIGN_OR_RETURN(*stored, source());
           }
           return stored->weight;
         }});
    tp.tensors.back().sha256 = std::move(known);
    tp.tensors.back().produced_sha256 = [stored] { return stored->weight_sha256; };
    auto from_weight = [stored]() -> absl::StatusOr<torch::Tensor> { return stored->weight_scale; };
    if (nvfp4) {
      std::vector<int64_t> block_shape = info->shape;
      block_shape.back() /= kNvfp4Block;
      tp.tensors.push_back({{module + ".weight_scale", DType::kF8E4M3, block_shape}, from_weight, true});
      tp.tensors.push_back(
          {{absl::StrCat(module, ".", Nvfp4GlobalScaleName(f, false)), DType::kF32, Nvfp4GlobalScaleShape(f)},
           [amax = qm.weight_amax, f] { return StoredNvfp4GlobalScale(amax, f); },
           true});
      tp.digest_keys.emplace_back(nullptr, "");
      tp.digest_keys.emplace_back(nullptr, "");
      if (SpecOf(qm.format).quantizes_input) {
        tp.tensors.push_back(
            {{absl::StrCat(module, ".", Nvfp4GlobalScaleName(f, true)), DType::kF32, Nvfp4GlobalScaleShape(f)},
             [amax = qm.input_amax, f] { return StoredNvfp4GlobalScale(amax, f); },
             true});
        tp.digest_keys.emplace_back(nullptr, "");
      }
      continue;
    }
    const DType sdtype = ScaleDType(f, info->dtype);
    tp.tensors.push_back({{module + ".weight_scale", sdtype, ScaleShape(f)}, from_weight, /*after_previous=*/true});
    tp.tensors.push_back(
        {{module + ".input_scale", sdtype, ScaleShape(f)},
         [in_amax = qm.input_amax, base_dtype = info->dtype, f] { return StoredInputScale(in_amax, base_dtype, f); },
         /*after_previous=*/true});
    tp.digest_keys.emplace_back(nullptr, "");
    tp.digest_keys.emplace_back(nullptr, "");
  }
  return tp;
}

std::function<void(size_t, size_t)> WriteProgress(const ExportOptions& options) {
  return [&options](size_t done, size_t total) {
    if (options.progress) options.progress(0.8 * double(done) / double(total));
  };
}

// Step 3a, the shared layout: pieces stored as blobs (or found there) and linked into the staging directory.
// The digests are returned when every file is a linked, verified blob (copies are hashed again later).
absl::StatusOr<std::optional<TensorDigests>> WriteShared(const Baseline& b, const ModulePlan& mp, TensorPlan& tp,
                                                         const StagedDir& staged, const ExportOptions& options,
                                                         ExportResult* r) {
  ASSIGN_OR_RETURN(std::vector<SharedPiece> pieces,
                   SharedPieces(b, tp.tensors, mp.module_group, mp.quantized, options));
  ASSIGN_OR_RETURN(BlobStore store, BlobStore::Open(options.blob_store, options.blob_store_below));
  // Until every blob is linked into the staging directory (or copied), `autoquant gc` must not remove
  // one: a blob just stored, or found with no scheme linking it, has a link count of 1.
  ASSIGN_OR_RETURN(FlockFile in_use, store.LockForUse(options.cancel));
  SharedWriteOptions wo;
  wo.allow_links = options.allow_links;
  wo.records = options.blob_records;
  wo.cancel = options.cancel;
  wo.progress = WriteProgress(options);
  ASSIGN_OR_RETURN(SharedWriteResult written, WriteSharedShards(store, tp.tensors, pieces, staged.dir(), wo));
  r->tensor_bytes = written.tensor_bytes;
  r->bytes_written = written.bytes_written;
  r->blobs_reused = written.blobs_reused;
  r->blobs_written = written.blobs_written;
  r->blobs_copied = written.blobs_copied;
  r->blob_records_failed = written.blob_records_failed;
  if (written.blobs_copied > 0) return std::nullopt;
  return std::move(written.digests);
}

// Step 3b, the standalone layout: sharded safetensors of the scheme's own, FP8 weights produced ahead on
// the GPU. Its digests are hashed from the very bytes handed to write() while the next tensors were
// produced: reading the files back would re-read the page cache, not the disk (write and fsync errors
// already fail the export; `autoquant diff` re-hashes from disk).
absl::StatusOr<TensorDigests> WriteStandalone(TensorPlan& tp, const StagedDir& staged, const ExportOptions& options,
                                              ExportResult* r) {
  ShardingOptions so;
  so.max_shard_bytes = options.max_shard_bytes;
  so.min_shard_bytes = options.min_shard_bytes;
  so.producers = options.writer_threads;
  so.always_index = true;
  so.cancel = options.cancel;
  so.progress = WriteProgress(options);
  if (options.fp8_prefetch_bytes > 0 && !tp.fp8_sources.empty()) {
    *tp.prefetcher = std::make_unique<Fp8Prefetcher>(std::move(tp.fp8_sources), options.fp8_prefetch_bytes,
                                                     options.fp8_prefetch_threads);
  }
  ASSIGN_OR_RETURN(ShardingResult written, WriteShardedSafetensors(staged.path(), tp.tensors, so));
  r->fp8_prefetched = *tp.prefetcher != nullptr;
  tp.prefetcher->reset();
  r->tensor_bytes = r->bytes_written = written.total_bytes;
  r->writer = written.seconds;
  r->writer_threads = options.writer_threads;
  TensorDigests d;
  for (const auto& [name, hex] : written.sha256) d[name] = TensorDigest{written.weight_map.at(name), hex};
  for (size_t i = 0; i < tp.tensors.size(); ++i) {
    const auto& [file, key] = tp.digest_keys[i];
    if (file != nullptr && tp.tensors[i].sha256.empty()) {
      RememberDigest(*file, key, written.sha256.at(tp.tensors[i].spec.name));
    }
  }
  return d;
}

// Step 4, the side files: config.json with its quantization_config, hf_quant_config.json (modelopt), the
// base's tokenizer and processor files, README.md.
absl::Status WriteSideFiles(const Checkpoint& base, const QuantConfigs& qc, const StagedDir& staged,
                            const ExportOptions& options) {
  json config = *base.config();
  config["quantization_config"] = qc.quantization_config;
  RETURN_IF_ERROR(WriteFileAtomic(staged.path() / "config.json", config.dump(2) + "\n"));
  if (!qc.hf_quant_config.is_null()) {
    RETURN_IF_ERROR(WriteFileAtomic(staged.path() / "hf_quant_config.json", qc.hf_quant_config.dump(2) + "\n"));
  }
  if (base.is_directory()) RETURN_IF_ERROR(CopySideFiles(base.path(), staged.path()).status());
  return WriteFileAtomic(staged.path() / "README.md", SchemeReadme(options.scheme, options.format));
}

// Step 5, the manifest and its check: layer-sensitivity/ records the digests of the staged files, and what
// gets published is exactly what it vouches for (hashed once, or the verified blobs they link; nothing
// writes to the staging directory since).
absl::Status WriteManifestAndVerify(const Baseline& b, const Plan& plan, const TensorPlan& tp,
                                    std::optional<TensorDigests> digests, const StagedDir& staged,
                                    const ExportOptions& options) {
  SchemeRecord record;
  record.scheme = options.scheme;
  record.format = std::string(ExportFormatName(options.format));
  record.disabled_by_flag = options.disabled_by_request;
  record.job_id = options.job_id;
  if (digests) {
    record.digests = *std::move(digests);
  } else {
    ASSIGN_OR_RETURN(record.digests, ComputeTensorDigests(staged.path()));
  }
  RETURN_IF_ERROR(WriteLayerSensitivity(staged.path() / "layer-sensitivity", b, plan, record));
  if (options.cancel != nullptr && options.cancel->load()) return absl::CancelledError("export cancelled");
  RETURN_IF_ERROR(CheckPlannedTensors(staged.path(), tp.tensors));
  return CheckManifestRecords(staged.path(), record.digests);
}

}  // namespace

absl::StatusOr<ExportResult> ExportScheme(const Checkpoint& base, const Baseline& b, const Plan& plan,
                                          const ExportOptions& options) {
  if (!base.config().has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("base checkpoint ", base.path().string(), " has no config.json"));
  }
  if (plan.num_quantized(b) == 0) {
    return absl::InvalidArgumentError(
        "the plan quantizes no group (coverage too small or everything disabled): nothing to export");
  }
  ASSIGN_OR_RETURN(ModulePlan mp, PlanModules(base, b, plan, options));
  ASSIGN_OR_RETURN(QuantConfigs qc, MakeQuantConfigs(options.format, mp.layers, AUTOQUANT_VERSION));
  TensorPlan tp = PlanTensors(base, mp, options);

  ASSIGN_OR_RETURN(StagedDir staged, StagedDir::Create(options.out_dir, options.overwrite));
  ExportResult r;
  r.layout = options.layout;
  auto t0 = std::chrono::steady_clock::now();
  std::optional<TensorDigests> digests;  // known without reading the staged files back
  if (options.layout == ExportLayout::kShared) {
    ASSIGN_OR_RETURN(digests, WriteShared(b, mp, tp, staged, options, &r));
  } else {
    ASSIGN_OR_RETURN(digests, WriteStandalone(tp, staged, options, &r));
  }
  r.write_seconds = Seconds(t0);
  RETURN_IF_ERROR(WriteSideFiles(base, qc, staged, options));
  auto t1 = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(WriteManifestAndVerify(b, plan, tp, std::move(digests), staged, options));
  r.check_seconds = Seconds(t1);
  if (options.progress) options.progress(1.0);
  // Step 6, publishing: through the gate (a fleet's lease), by renaming the staging directory into place.
  CrashPoint("publish");
  RETURN_IF_ERROR(PublishThrough(options.publish_gate, [&] { return staged.Commit(); }));
  CrashPoint("published");
  r.out_dir = options.out_dir;
  r.tensors_written = tp.tensors.size();
  r.quantized_modules = mp.quantized.size();
  for (const auto& [_, q] : mp.quantized) r.resident_weights += q.resident.defined() ? 1 : 0;
  return r;
}

}  // namespace autoquant
