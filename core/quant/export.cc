#include "core/quant/export.h"

#include <torch/torch.h>

#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/checkpoint_writer.h"
#include "core/quant/fp8_storage.h"
#include "core/quant/integrity.h"
#include "core/quant/manifests.h"
#include "core/util/crash_point.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace fs = std::filesystem;
using json = nlohmann::json;

absl::StatusOr<std::string> CheckpointModuleName(const Checkpoint& base, const std::string& module) {
  if (base.Find(module + ".weight") != nullptr) return module;
  std::string legacy = module;
  if (absl::StartsWith(module, "model.language_model.")) {
    legacy = "model." + module.substr(std::string("model.language_model.").size());
  } else if (absl::StartsWith(module, "model.visual.")) {
    legacy = module.substr(std::string("model.").size());
  }
  if (base.Find(legacy + ".weight") != nullptr) return legacy;
  return absl::NotFoundError(absl::StrCat("module '", module, "' has no weight in checkpoint ",
                                          base.path().string(), " (tried '", module, ".weight' and '",
                                          legacy, ".weight')"));
}

namespace {

// The module names a quantization config lists. transformers (and
// llm-compressor) match compressed-tensors' `ignore` against the in-memory
// module names, which are transformers 5.x names whatever the checkpoint's key
// layout; ModelOpt configs name checkpoint modules (vLLM maps both layouts).
std::string ConfigModuleName(ExportFormat format, const std::string& ckpt_name, const std::string& model_name) {
  return format == ExportFormat::kCompressedTensors ? model_name : ckpt_name;
}

struct QuantizedModule {
  std::string ckpt_name;  // checkpoint module name
  float input_amax = 0;
  DType base_dtype = DType::kF32;  // the base weight's dtype: compressed-tensors stores scales in it
};

absl::StatusOr<StoredFp8Weight> QuantizedWeight(const Checkpoint& base, const std::string& ckpt_name,
                                                ExportFormat format) {
  ASSIGN_OR_RETURN(torch::Tensor w, base.Get(ckpt_name + ".weight"));
  return QuantizeForExport(w, format);
}

absl::StatusOr<bool> BitEqual(const torch::Tensor& a, const torch::Tensor& b) {
  return TorchCall([&] {
    if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
    if (a.numel() == 0) return true;
    return torch::equal(a.contiguous().reshape({-1}).view(torch::kByte),
                        b.contiguous().reshape({-1}).view(torch::kByte));
  }, "self-check comparison");
}

// Compares the written checkpoint with the plan; returns the first disagreement.
absl::Status SelfCheck(const Checkpoint& base, const fs::path& dir,
                       const std::map<std::string, QuantizedModule>& quantized, ExportFormat format) {
  ASSIGN_OR_RETURN(Checkpoint out, Checkpoint::Open(dir));
  std::set<std::string> expected;
  for (const auto& name : base.TensorNames()) expected.insert(name);
  for (const auto& [_, q] : quantized) {
    expected.insert(q.ckpt_name + ".weight_scale");
    expected.insert(q.ckpt_name + ".input_scale");
  }
  for (const auto& name : out.TensorNames()) {
    if (!expected.count(name)) return absl::InternalError(absl::StrCat("self-check: unexpected tensor '", name, "'"));
  }
  for (const auto& name : expected) {
    if (out.Find(name) == nullptr) return absl::InternalError(absl::StrCat("self-check: tensor '", name, "' missing"));
  }
  std::map<std::string, const QuantizedModule*> by_weight;
  for (const auto& [_, q] : quantized) by_weight[q.ckpt_name + ".weight"] = &q;
  for (const auto& name : base.TensorNames()) {
    ASSIGN_OR_RETURN(torch::Tensor got, out.Get(name));
    auto it = by_weight.find(name);
    if (it == by_weight.end()) {
      ASSIGN_OR_RETURN(torch::Tensor want, base.Get(name));
      ASSIGN_OR_RETURN(bool same, BitEqual(got, want));
      if (!same) {
        return absl::InternalError(absl::StrCat("self-check: '", name, "' differs from the base but the plan keeps it"));
      }
      continue;
    }
    const QuantizedModule& q = *it->second;
    ASSIGN_OR_RETURN(StoredFp8Weight want, QuantizedWeight(base, q.ckpt_name, format));
    ASSIGN_OR_RETURN(bool same_w, BitEqual(got, want.weight));
    if (got.scalar_type() != torch::kFloat8_e4m3fn || !same_w) {
      return absl::InternalError(absl::StrCat("self-check: '", name, "' is not the FP8 weight the plan requires"));
    }
    ASSIGN_OR_RETURN(torch::Tensor ws, out.Get(q.ckpt_name + ".weight_scale"));
    ASSIGN_OR_RETURN(bool same_ws, BitEqual(ws, want.weight_scale));
    if (!same_ws) {
      return absl::InternalError(absl::StrCat("self-check: weight_scale of '", q.ckpt_name, "' is wrong"));
    }
    ASSIGN_OR_RETURN(torch::Tensor is, out.Get(q.ckpt_name + ".input_scale"));
    ASSIGN_OR_RETURN(torch::Tensor want_is, StoredInputScale(q.input_amax, q.base_dtype, format));
    ASSIGN_OR_RETURN(bool same_is, BitEqual(is, want_is));
    if (!same_is) {
      return absl::InternalError(absl::StrCat("self-check: input_scale of '", q.ckpt_name, "' is wrong"));
    }
  }
  return absl::OkStatus();
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
  const size_t fp8 = b.format_index("FP8");
  // Quantized modules, keyed by checkpoint weight name.
  std::map<std::string, QuantizedModule> quantized;
  std::vector<LayerQuant> layers;
  for (size_t g = 0; g < b.groups.size(); ++g) {
    const auto& fmt = b.formats[plan.format[g]];
    if (plan.format[g] != fp8 && fmt.name != "NONE") {
      return absl::UnimplementedError(absl::StrCat("export of format ", fmt.name, " is not implemented"));
    }
    for (size_t li : b.groups[g].linear_index) {
      ASSIGN_OR_RETURN(std::string ckpt, CheckpointModuleName(base, b.linears[li].name));
      layers.push_back({ConfigModuleName(options.format, ckpt, b.linears[li].name), fmt.name});
      if (fmt.name == "NONE") continue;
      quantized[ckpt] = {ckpt, b.input_amax[fp8][li], base.Find(ckpt + ".weight")->dtype};
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
    layers.push_back({ConfigModuleName(options.format, ckpt.ok() ? *ckpt : l.name, l.name), "NONE"});
  }
  ASSIGN_OR_RETURN(QuantConfigs qc, MakeQuantConfigs(options.format, layers, AUTOQUANT_VERSION));

  // The tensor plan: base order, each quantized weight followed by its scales.
  std::vector<PlannedTensor> tensors;
  for (const auto& name : base.TensorNames()) {
    const TensorInfo* info = base.Find(name);
    std::string module = absl::EndsWith(name, ".weight") ? name.substr(0, name.size() - 7) : "";
    auto q = quantized.find(module);
    if (q == quantized.end()) {
      tensors.push_back({{name, info->dtype, info->shape}, [&base, name] { return base.Get(name); }});
      continue;
    }
    // The weight's producer leaves its scale here for the next tensor's.
    auto stored = std::make_shared<StoredFp8Weight>();
    const ExportFormat f = options.format;
    tensors.push_back({{name, DType::kF8E4M3, info->shape},
                       [&base, module, stored, f]() -> absl::StatusOr<torch::Tensor> {
                         ASSIGN_OR_RETURN(*stored, QuantizedWeight(base, module, f));
                         return stored->weight;
                       }});
    const DType sdtype = ScaleDType(f, info->dtype);
    tensors.push_back({{module + ".weight_scale", sdtype, ScaleShape(f)},
                       [stored]() -> absl::StatusOr<torch::Tensor> { return stored->weight_scale; }});
    tensors.push_back({{module + ".input_scale", sdtype, ScaleShape(f)},
                       [in_amax = q->second.input_amax, base_dtype = info->dtype, f] {
                         return StoredInputScale(in_amax, base_dtype, f);
                       }});
  }

  ASSIGN_OR_RETURN(StagedDir staged, StagedDir::Create(options.out_dir, options.overwrite));
  ShardingOptions so;
  so.max_shard_bytes = options.max_shard_bytes;
  so.always_index = true;
  so.cancel = options.cancel;
  so.progress = [&](size_t done, size_t total) {
    if (options.progress) options.progress(0.8 * double(done) / double(total));
  };
  ASSIGN_OR_RETURN(ShardingResult written, WriteShardedSafetensors(staged.path(), tensors, so));

  json config = *base.config();
  config["quantization_config"] = qc.quantization_config;
  RETURN_IF_ERROR(WriteFileAtomic(staged.path() / "config.json", config.dump(2) + "\n"));
  if (!qc.hf_quant_config.is_null()) {
    RETURN_IF_ERROR(WriteFileAtomic(staged.path() / "hf_quant_config.json", qc.hf_quant_config.dump(2) + "\n"));
  }
  if (base.is_directory()) RETURN_IF_ERROR(CopySideFiles(base.path(), staged.path()).status());
  RETURN_IF_ERROR(WriteFileAtomic(staged.path() / "README.md", SchemeReadme(options.scheme, options.format)));
  SchemeRecord record;
  record.scheme = options.scheme;
  record.format = std::string(ExportFormatName(options.format));
  record.disabled_by_flag = options.disabled_by_request;
  record.job_id = options.job_id;
  ASSIGN_OR_RETURN(record.digests, ComputeTensorDigests(staged.path()));
  RETURN_IF_ERROR(WriteLayerSensitivity(staged.path() / "layer-sensitivity", b, plan, record));

  if (options.cancel != nullptr && options.cancel->load()) return absl::CancelledError("export cancelled");
  RETURN_IF_ERROR(SelfCheck(base, staged.path(), quantized, options.format));
  // What gets published is exactly what the manifest vouches for: the manifest as written records the
  // digests of the staged files (hashed once above; nothing writes to the staging directory since).
  RETURN_IF_ERROR(CheckManifestRecords(staged.path(), record.digests));
  if (options.progress) options.progress(1.0);
  CrashPoint("publish");
  RETURN_IF_ERROR(PublishThrough(options.publish_gate, [&] { return staged.Commit(); }));
  CrashPoint("published");
  ExportResult r;
  r.out_dir = options.out_dir;
  r.tensors_written = tensors.size();
  r.quantized_modules = quantized.size();
  r.bytes_written = written.total_bytes;
  return r;
}

}  // namespace autoquant
