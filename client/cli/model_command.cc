#include "client/cli/model_command.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli/leftovers.h"
#include "client/cli/output_recognisers.h"
#include "core/io/checkpoint.h"
#include "core/io/safetensors_file.h"
#include "core/io/safetensors_writer.h"
#include "core/model/device.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/generate.h"
#include "core/model/qwen2_5_vl/model.h"
#include "core/model/qwen2_5_vl/presets.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "core/scheme/scheme_loader.h"
#include "core/util/file_util.h"
#include "core/util/path_guard.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"
#include "nlohmann/json.hpp"

namespace autoquant::cli {
namespace {

absl::StatusOr<std::pair<int64_t, int64_t>> ParseHxW(const std::string& s) {
  std::vector<std::string> parts = absl::StrSplit(s, 'x');
  int64_t h = 0, w = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &h) || !absl::SimpleAtoi(parts[1], &w)) {
    return absl::InvalidArgumentError(absl::StrCat("expected HxW (e.g. 448x448), got '", s, "'"));
  }
  return std::make_pair(h, w);
}

absl::StatusOr<Qwen2_5_VLModel> Load(const std::string& dir, torch::Device device, torch::ScalarType dtype) {
  ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open(dir));
  // Scheme directories run as an engine would (dequantized weights, quantized inputs).
  if (HasQuantizedWeights(ckpt)) {
    ASSIGN_OR_RETURN(LoadedScheme scheme, LoadScheme(ckpt, device, dtype));
    return scheme.model;
  }
  return LoadQwen2_5_VL(ckpt, device, dtype);
}

// A JSON token id or list of them (eos_token_id's two forms); nullopt for anything else.
std::optional<std::vector<int64_t>> TokenIds(const nlohmann::json& j) {
  if (j.is_number_integer()) return std::vector<int64_t>{j.get<int64_t>()};
  if (!j.is_array()) return std::nullopt;
  std::vector<int64_t> ids;
  for (const auto& e : j) {
    if (!e.is_number_integer()) return std::nullopt;
    ids.push_back(e.get<int64_t>());
  }
  return ids;
}

// What transformers' generate stops on by default: generation_config.json's
// eos_token_id, else config.json's (top level, then text_config). Empty when
// neither names one.
absl::StatusOr<std::vector<int64_t>> EosTokenIds(const std::filesystem::path& dir) {
  for (const char* name : {"generation_config.json", "config.json"}) {
    const std::filesystem::path path = dir / name;
    if (!std::filesystem::exists(path)) continue;
    ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a JSON object"));
    for (const nlohmann::json* scope : {&j, j.contains("text_config") ? &j["text_config"] : nullptr}) {
      if (scope == nullptr || !scope->is_object() || !scope->contains("eos_token_id")) continue;
      const nlohmann::json& eos = (*scope)["eos_token_id"];
      if (eos.is_null()) return std::vector<int64_t>{};
      std::optional<std::vector<int64_t>> ids = TokenIds(eos);
      if (!ids) {
        return absl::InvalidArgumentError(
            absl::StrCat(path.string(), ": eos_token_id must be a token id or a list of them, got ", eos.dump()));
      }
      return *ids;
    }
  }
  return std::vector<int64_t>{};
}

absl::StatusOr<std::vector<int64_t>> StopTokenIds(const std::string& flag, const std::string& model_dir) {
  if (flag == "eos") return EosTokenIds(model_dir);
  if (flag == "none") return std::vector<int64_t>{};
  std::vector<int64_t> ids;
  for (absl::string_view part : absl::StrSplit(flag, ',')) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--stop-token-ids must be eos, none or comma-separated token ids, got '", flag, "'"));
    }
    ids.push_back(id);
  }
  return ids;
}

}  // namespace

absl::Status RunModelInit(const ModelInitOptions& o) {
  RETURN_IF_ERROR(CheckOutputPath(
      {.path = o.out,
       .kind = OutputKind::kDirectory,
       .overwrite = o.overwrite,
       .what = "--out",
       .is_ours = [](const std::filesystem::path& p) { return RecogniseCheckpointDir(p, kRandomCheckpointFormat); }},
      {}));
  RemoveLeftoversBeside(o.out, std::cerr);
  InitCheckpointOptions init;
  init.preset = o.preset;
  init.out = o.out;
  init.seed = o.seed;
  init.overwrite = o.overwrite;
  if (o.dtype == "bfloat16") {
    init.dtype = torch::kBFloat16;
  } else if (o.dtype == "float32") {
    init.dtype = torch::kFloat32;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--dtype must be bfloat16 or float32, got '", o.dtype, "'"));
  }
  return InitRandomCheckpoint(init);
}

absl::Status RunModelForward(const ModelForwardOptions& o) {
  RETURN_IF_ERROR(CheckOutputPath(
      {.path = o.output,
       .kind = OutputKind::kFile,
       .overwrite = o.overwrite,
       .what = "--output",
       .is_ours = [](const std::filesystem::path& p) { return RecogniseSafetensors(p, kLogitsFormat); }},
      {{o.model, "the model directory"}, {o.input, "the input file"}}));
  ASSIGN_OR_RETURN(torch::Device device, ParseDevice(o.device));
  ASSIGN_OR_RETURN(torch::ScalarType dtype, ParseDtype(o.dtype, device));
  RemoveLeftoversBeside(o.output, std::cerr);
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(o.input));
  Qwen2_5_VLInputs in;
  for (auto [name, slot] : {std::pair<const char*, torch::Tensor*>{"input_ids", &in.input_ids},
                            {"attention_mask", &in.attention_mask},
                            {"pixel_values", &in.pixel_values},
                            {"image_grid_thw", &in.image_grid_thw}}) {
    if (const TensorInfo* info = file->Find(name)) *slot = file->Get(*info);
  }
  for (const auto& t : file->tensors()) {
    if (t.name != "input_ids" && t.name != "attention_mask" && t.name != "pixel_values" && t.name != "image_grid_thw" &&
        t.name != "sample_image_offsets" && t.name != "sample_patch_offsets") {
      return absl::InvalidArgumentError(absl::StrCat(o.input, ": unexpected tensor '", t.name,
                                                     "' (expected input_ids, attention_mask, pixel_values, "
                                                     "image_grid_thw; a calibration set's offsets are ignored)"));
    }
  }
  ASSIGN_OR_RETURN(Qwen2_5_VLModel model, Load(o.model, device, dtype));
  torch::InferenceMode guard;
  ASSIGN_OR_RETURN(torch::Tensor logits, model->Forward(in));
  ASSIGN_OR_RETURN(TensorSpec spec, SpecOf("logits", logits));
  // SafetensorsWriter publishes by rename: an interrupted run leaves the old file.
  ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(o.output, {spec},
                                                          {{"format", "pt"}, {"autoquant.format", kLogitsFormat}}));
  RETURN_IF_ERROR(writer.Write(logits));
  return writer.Finish();
}

absl::Status RunModelGenerate(const ModelGenerateOptions& o, std::ostream& out) {
  ASSIGN_OR_RETURN(torch::Device device, ParseDevice(o.device));
  ASSIGN_OR_RETURN(torch::ScalarType dtype, ParseDtype(o.dtype, device));
  GenerateOptions gen;
  gen.max_new_tokens = o.max_new_tokens;
  ASSIGN_OR_RETURN(gen.stop_token_ids, StopTokenIds(o.stop_token_ids, o.model));
  ASSIGN_OR_RETURN(CalibSet set, CalibSet::Load(o.inputs));
  if (o.sample < 0 || o.sample >= set.num_samples()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--sample ", o.sample, " is not a sample of ", o.inputs, " (it has ", set.num_samples(), ")"));
  }
  ASSIGN_OR_RETURN(Qwen2_5_VLInputs prompt, set.Sample(o.sample));
  ASSIGN_OR_RETURN(Qwen2_5_VLModel model, Load(o.model, device, dtype));
  ASSIGN_OR_RETURN(GenerateResult r, GreedyGenerate(model, prompt, gen));
  const double tokens_per_second = r.decode_steps > 0 ? r.decode_steps / r.decode_seconds : 0.0;
  if (o.json) {
    nlohmann::ordered_json j;
    j["tokens"] = r.tokens;
    j["finite"] = r.finite;
    j["prefill_seconds"] = r.prefill_seconds;
    j["decode_seconds"] = r.decode_seconds;
    j["tokens_per_second"] = tokens_per_second;
    out << j.dump() << "\n";
    return absl::OkStatus();
  }
  out << "tokens: " << absl::StrJoin(r.tokens, " ") << "\n";
  if (!r.finite) out << "non-finite logits after " << r.tokens.size() << " tokens: generation stopped there\n";
  out << "prefill: " << r.prefill_seconds << " s; decode: " << r.decode_steps << " steps in " << r.decode_seconds
      << " s (" << tokens_per_second << " tokens/s)\n";
  return absl::OkStatus();
}

absl::Status RunModelBench(const ModelBenchOptions& o, std::ostream& out) {
  return TorchCall(
      [&]() -> absl::Status {
        ASSIGN_OR_RETURN(torch::Device device, ParseDevice(o.device));
        ASSIGN_OR_RETURN(torch::ScalarType dtype, ParseDtype(o.dtype, device));
        ASSIGN_OR_RETURN(auto hw, ParseHxW(o.image));
        ASSIGN_OR_RETURN(Qwen2_5_VLModel model, Load(o.model, device, dtype));
        const auto& v = model->config().vision;
        const int64_t image_tokens = o.images * (hw.first / v.patch_size) * (hw.second / v.patch_size) /
                                     (v.spatial_merge_size * v.spatial_merge_size);
        SynthOptions synth;
        synth.samples = o.batch;
        synth.images_per_sample = o.images;
        synth.image_height = hw.first;
        synth.image_width = hw.second;
        synth.seq_len = o.text_tokens + image_tokens + 2 * o.images;
        ASSIGN_OR_RETURN(CalibSet set, SynthesizeCalibSet(model->config(), synth));
        RETURN_IF_ERROR(set.To(device));
        ASSIGN_OR_RETURN(Qwen2_5_VLInputs in, set.Batch(0, set.num_samples()));
        torch::InferenceMode guard;
        auto sync = [&] {
          if (device.is_cuda()) torch::cuda::synchronize();
        };
        std::vector<double> ms;
        for (int64_t i = 0; i < o.warmup + o.iters; ++i) {
          sync();
          auto t0 = std::chrono::steady_clock::now();
          ASSIGN_OR_RETURN(torch::Tensor logits, model->Forward(in));
          sync();
          auto t1 = std::chrono::steady_clock::now();
          if (i >= o.warmup) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        }
        if (ms.empty()) return absl::InvalidArgumentError("--iters must be positive");
        std::vector<double> sorted = ms;
        std::sort(sorted.begin(), sorted.end());
        const double median = sorted.size() % 2 ? sorted[sorted.size() / 2]
                                                : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);
        const int64_t tokens = o.batch * set.seq_len();
        nlohmann::ordered_json j;
        j["model"] = o.model;
        j["device"] = device.str();
        j["dtype"] = std::string(c10::toString(dtype));
        j["batch"] = o.batch;
        j["seq_len"] = set.seq_len();
        j["images_per_sample"] = o.images;
        j["image"] = o.image;
        j["iters"] = o.iters;
        j["median_ms"] = median;
        j["min_ms"] = sorted.front();
        j["max_ms"] = sorted.back();
        j["tokens_per_s"] = tokens / (median / 1000.0);
        j["samples_ms"] = ms;
        out << j.dump() << "\n";
        return absl::OkStatus();
      },
      "model bench");
}

void AddModelCommand(CLI::App& app, absl::Status* status) {
  CLI::App* model = app.add_subcommand("model", "Qwen2.5-VL model: random checkpoints, forward pass, timing");
  model->require_subcommand(1);

  auto init = std::make_shared<ModelInitOptions>();
  CLI::App* c = model->add_subcommand("init", "Write a random-weight checkpoint (HF layout) from a preset");
  c->add_option("--preset", init->preset, "tiny | qwen2.5-vl-3b | qwen2.5-vl-7b")->required();
  c->add_option("--out", init->out, "output checkpoint directory")->required();
  c->add_option("--seed", init->seed, "random seed");
  c->add_option("--dtype", init->dtype, "bfloat16 | float32");
  c->add_flag("--overwrite", init->overwrite, "replace an existing output directory, if `model init` wrote it");
  c->callback([init, status] { *status = RunModelInit(*init); });

  auto cfg = std::make_shared<std::pair<std::string, std::string>>("", "bfloat16");  // preset, dtype
  c = model->add_subcommand("config", "Print a preset's config.json (what `model init` writes), no weights");
  c->add_option("--preset", cfg->first, "tiny | qwen2.5-vl-3b | qwen2.5-vl-7b")->required();
  c->add_option("--dtype", cfg->second, "bfloat16 | float32")->check(CLI::IsMember({"bfloat16", "float32"}));
  c->callback([cfg, status] {
    auto j = PresetConfig(cfg->first, cfg->second == "float32" ? torch::kFloat32 : torch::kBFloat16);
    if (!j.ok()) {
      *status = j.status();
      return;
    }
    std::cout << j->dump(2) << "\n";
  });

  auto fwd = std::make_shared<ModelForwardOptions>();
  c = model->add_subcommand("forward", "Run the forward pass on inputs from a .safetensors file");
  c->add_option("--model", fwd->model, "checkpoint directory")->required()->check(CLI::ExistingDirectory);
  c->add_option("--input", fwd->input, "input .safetensors (input_ids, attention_mask, pixel_values, image_grid_thw)")
      ->required()
      ->check(CLI::ExistingFile);
  c->add_option("--output", fwd->output, "output .safetensors (logits [B,S,vocab] float32; written atomically)")
      ->required();
  c->add_flag("--overwrite", fwd->overwrite, "replace an existing --output, if it holds logits we wrote");
  c->add_option("--device", fwd->device, "cpu | cuda");
  c->add_option("--dtype", fwd->dtype, "float32 | bfloat16 (default: float32 on cpu, bfloat16 on cuda)");
  c->callback([fwd, status] { *status = RunModelForward(*fwd); });

  auto gen = std::make_shared<ModelGenerateOptions>();
  c = model->add_subcommand("generate", "Greedy generation from one sample of a calibration-format file");
  c->add_option("--model", gen->model, "checkpoint or scheme directory")->required()->check(CLI::ExistingDirectory);
  c->add_option("--inputs", gen->inputs, "calibration-format .safetensors (autoquant.calib.v1)")
      ->required()
      ->check(CLI::ExistingFile);
  c->add_option("--sample", gen->sample, "index of the sample to continue (its padding is stripped)")->required();
  c->add_option("--max-new-tokens", gen->max_new_tokens, "tokens to generate at most");
  c->add_option("--stop-token-ids", gen->stop_token_ids,
                "eos (the model's eos_token_id) | none | comma-separated ids; stops after emitting one");
  c->add_option("--device", gen->device, "auto | cpu | cuda");
  c->add_option("--dtype", gen->dtype, "float32 | bfloat16 (default: float32 on cpu, bfloat16 on cuda)");
  c->add_flag("--json", gen->json,
              "print {tokens, finite, prefill_seconds, decode_seconds, tokens_per_second (decode steps per second)}");
  c->callback([gen, status] { *status = RunModelGenerate(*gen, std::cout); });

  auto bench = std::make_shared<ModelBenchOptions>();
  c = model->add_subcommand("bench", "Time the forward pass on synthetic inputs; prints JSON");
  c->add_option("--model", bench->model, "checkpoint directory")->required()->check(CLI::ExistingDirectory);
  c->add_option("--device", bench->device, "cuda (default) | cpu");
  c->add_option("--dtype", bench->dtype, "float32 | bfloat16 (default: float32 on cpu, bfloat16 on cuda)");
  c->add_option("--batch", bench->batch, "batch size (default 1)");
  c->add_option("--text-tokens", bench->text_tokens, "text tokens per sample (default 512)");
  c->add_option("--image", bench->image, "image size HxW in pixels (default 448x448)");
  c->add_option("--images", bench->images, "images per sample (default 1)");
  c->add_option("--iters", bench->iters, "timed iterations (default 10)");
  c->add_option("--warmup", bench->warmup, "untimed iterations first (default 2)");
  c->callback([bench, status] { *status = RunModelBench(*bench, std::cout); });
}

}  // namespace autoquant::cli
