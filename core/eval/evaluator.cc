#include "core/eval/evaluator.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <map>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "core/engine/engine.h"
#include "core/eval/logit_metrics.h"
#include "core/io/checkpoint.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/generate.h"
#include "core/model/qwen2_5_vl/model.h"
#include "core/scheme/manifests.h"
#include "core/scheme/scheme_overlay.h"
#include "core/util/dir_handle.h"
#include "core/util/elapsed.h"
#include "core/util/file_util.h"
#include "core/util/hash.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"
#include "nlohmann/json.hpp"

namespace autoquant {
namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

void Report(const ProgressFn& fn, double fraction, std::string message = "") {
  if (fn) fn(ProgressEvent{Phase::kEvaluate, fraction, std::move(message)});
}

absl::Status CheckCancel(const std::atomic<bool>* cancel) {
  if (cancel != nullptr && cancel->load()) return absl::CancelledError("evaluation cancelled");
  return absl::OkStatus();
}

std::vector<double> ToVector(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kCPU, torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// The search space's names, most aggressive first ("NVFP4", "FP8").
ojson FormatNames(const std::vector<Format>& formats) {
  ojson out = ojson::array();
  for (Format f : formats) out.push_back(FormatName(f));
  return out;
}

// How many groups the scheme put in each quantized format.
ojson GroupsByFormat(const SchemeManifest& m) {
  std::map<std::string, int64_t> count;
  for (const auto& [key, g] : m.groups) {
    if (IsQuantized(g.format)) ++count[std::string(FormatName(g.format))];
  }
  ojson out = ojson::object();
  for (const auto& [name, n] : count) out[name] = n;
  return out;
}

ojson CiJson(const MeanCi& c, absl::string_view over) {
  return ojson{{"mean", c.mean}, {"ci95", {c.lo, c.hi}}, {"samples", c.n}, {"over", over}};
}

// Per-sample numbers of one pass over the set.
struct Pass {
  std::vector<double> nll, tokens;
  torch::Tensor last_logits;  // [N, V] float32 on the device
};

struct Generation {
  std::vector<int64_t> tokens;
  bool finite = true;
  int64_t decode_steps = 0;
  double decode_seconds = 0;
};

}  // namespace

struct Evaluator::Impl {
  Engine* engine = nullptr;
  EvalOptions options;
  CalibSet set;
  std::string fingerprint;
  Fp8Matmul matmul = Fp8Matmul::kAuto;  // options.fp8_matmul, parsed
  std::vector<bool> has_images;
  std::vector<int64_t> prompts;        // sample indices used for sanity generation
  std::vector<int64_t> prompt_tokens;  // their real (unpadded) token counts
  std::vector<int64_t> skip_ids;
  bool base_done = false;
  Pass base;
  std::vector<Generation> base_generation;

  absl::StatusOr<Pass> RunPass(const ProgressFn& progress, double from, double to, const std::atomic<bool>* cancel) {
    Qwen2_5_VLModel& model = engine->resident_model();
    Pass p;
    std::vector<torch::Tensor> last;
    const auto ranges = set.BatchRanges(options.batch_size);
    for (size_t b = 0; b < ranges.size(); ++b) {
      RETURN_IF_ERROR(CheckCancel(cancel));
      ASSIGN_OR_RETURN(Qwen2_5_VLInputs in, set.Batch(ranges[b].first, ranges[b].second));
      torch::InferenceMode guard;
      ASSIGN_OR_RETURN(torch::Tensor logits, model->Forward(in));
      RETURN_IF_ERROR(TorchCall(
          [&] {
            TokenNll t = NextTokenNll(logits, in.input_ids, in.attention_mask, skip_ids);
            for (double v : ToVector(t.nll_sum)) p.nll.push_back(v);
            for (double v : ToVector(t.tokens)) p.tokens.push_back(v);
            last.push_back(LastTokenLogits(logits, in.attention_mask));
          },
          "evaluation metrics"));
      Report(progress, from + (to - from) * (b + 1) / ranges.size());
    }
    ASSIGN_OR_RETURN(p.last_logits, TorchCall([&] { return torch::cat(last); }, "evaluation metrics"));
    return p;
  }

  absl::StatusOr<std::vector<Generation>> Generate(const ProgressFn& progress, double from, double to,
                                                   const std::atomic<bool>* cancel) {
    std::vector<Generation> out;
    if (options.generate_tokens <= 0) return out;
    Qwen2_5_VLModel& model = engine->resident_model();
    GenerateOptions g;
    g.max_new_tokens = options.generate_tokens;
    for (size_t i = 0; i < prompts.size(); ++i) {
      RETURN_IF_ERROR(CheckCancel(cancel));
      ASSIGN_OR_RETURN(Qwen2_5_VLInputs in, set.Sample(prompts[i]));
      ASSIGN_OR_RETURN(GenerateResult r, GreedyGenerate(model, in, g));
      out.push_back({std::move(r.tokens), r.finite, r.decode_steps, r.decode_seconds});
      Report(progress, from + (to - from) * (i + 1) / prompts.size());
    }
    return out;
  }

  // Evaluate's steps (defined below).
  struct SchemeRun;
  // The scheme's pass and generations, under its overlay (removed on return).
  absl::StatusOr<SchemeRun> RunScheme(const SchemeOverlay& overlay, const ProgressFn& progress,
                                      const std::atomic<bool>* cancel);
  // Perplexity and last-token logit metrics against the base: fills `out`, returns the "summary" and
  // "per_sample" sections of evaluation.json.
  absl::StatusOr<ojson> CompareLogits(const Pass& scheme, EvalSummary* out);
  // Greedy generations against the base's: fills `out`, returns the "generation" section.
  ojson CompareGenerations(const std::vector<Generation>& scheme, EvalSummary* out);
  // evaluation.json's identification: format, scheme, producer, base, evaluation set, scheme, execution.
  ojson Provenance(const SchemeManifest& manifest, const SchemeOverlay& overlay, const EvalSummary& out,
                   int64_t with_images);
};

Evaluator::Evaluator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Evaluator::~Evaluator() = default;
const EvalOptions& Evaluator::options() const { return impl_->options; }
const std::string& Evaluator::fingerprint() const { return impl_->fingerprint; }
int64_t Evaluator::samples() const { return impl_->set.num_samples(); }
int64_t Evaluator::samples_with_images() const {
  return std::count(impl_->has_images.begin(), impl_->has_images.end(), true);
}

absl::StatusOr<std::unique_ptr<Evaluator>> Evaluator::Create(Engine* engine, const EvalOptions& options) {
  if (options.batch_size < 1) return absl::InvalidArgumentError("evaluation batch size must be >= 1");
  if (options.generate_tokens < 0 || options.generate_prompts < 0) {
    return absl::InvalidArgumentError("generation tokens and prompts must be >= 0");
  }
  auto impl = std::make_unique<Impl>();
  ASSIGN_OR_RETURN(impl->matmul, ParseFp8Matmul(options.fp8_matmul));
  impl->engine = engine;
  impl->options = options;
  Sha256 h;
  RETURN_IF_ERROR(HashFile(options.eval_set, &h));
  ASSIGN_OR_RETURN(impl->fingerprint, h.HexDigest());
  if (impl->fingerprint == engine->calib_fingerprint()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the evaluation set ", options.eval_set.string(), " is the calibration set; evaluate on held-out samples (",
        "e.g. `autoquant calib synth --seed N` or autoquant-calib on other images)"));
  }
  auto loaded = CalibSet::Load(options.eval_set);
  if (!loaded.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("evaluation set: ", loaded.status().message()));
  }
  impl->set = *std::move(loaded);
  Qwen2_5_VLModel& model = engine->resident_model();
  const CalibSet& calib = engine->calib_set();

  // Held out: no sample (tokens and pixels) may also be a calibration sample.
  RETURN_IF_ERROR(TorchCall(
      [&]() -> absl::Status {
        auto row_hashes = [](const torch::Tensor& ids) {
          std::vector<size_t> out;
          for (int64_t i = 0; i < ids.size(0); ++i) {
            const char* p = reinterpret_cast<const char*>(ids[i].data_ptr<int64_t>());
            out.push_back(std::hash<std::string_view>{}(std::string_view(p, ids.size(1) * sizeof(int64_t))));
          }
          return out;
        };
        if (impl->set.seq_len() != calib.seq_len()) return absl::OkStatus();
        const torch::Tensor calib_ids = calib.input_ids().to(torch::kCPU, torch::kLong).contiguous();
        const torch::Tensor eval_ids = impl->set.input_ids().to(torch::kCPU, torch::kLong).contiguous();
        std::unordered_multimap<size_t, int64_t> calib_rows;
        const auto ch = row_hashes(calib_ids);
        for (size_t j = 0; j < ch.size(); ++j) calib_rows.emplace(ch[j], j);
        const auto eh = row_hashes(eval_ids);
        for (size_t i = 0; i < eh.size(); ++i) {
          auto [lo, hi] = calib_rows.equal_range(eh[i]);
          for (auto it = lo; it != hi; ++it) {
            if (!torch::equal(eval_ids[i], calib_ids[it->second])) continue;
            ASSIGN_OR_RETURN(Qwen2_5_VLInputs a, impl->set.Sample(i));
            ASSIGN_OR_RETURN(Qwen2_5_VLInputs b, calib.Sample(it->second));
            const bool same_pixels =
                a.pixel_values.defined() == b.pixel_values.defined() &&
                (!a.pixel_values.defined() || (a.pixel_values.sizes() == b.pixel_values.sizes() &&
                                               torch::equal(a.pixel_values.cpu(), b.pixel_values.cpu())));
            if (same_pixels) {
              return absl::InvalidArgumentError(
                  absl::StrCat("evaluation sample ", i, " is calibration sample ", it->second,
                               ": an evaluation set must be held out from calibration (other samples)"));
            }
          }
        }
        return absl::OkStatus();
      },
      "evaluation set"));

  const auto& cfg = model->config();
  impl->skip_ids = {cfg.image_token_id, cfg.video_token_id};
  int text_prompts = 0, image_prompts = 0;
  for (int64_t i = 0; i < impl->set.num_samples(); ++i) {
    ASSIGN_OR_RETURN(Qwen2_5_VLInputs in, impl->set.Sample(i));
    const bool img = in.pixel_values.defined();
    impl->has_images.push_back(img);
    int& n = img ? image_prompts : text_prompts;
    if (n < options.generate_prompts) {
      ASSIGN_OR_RETURN(int64_t tokens, TorchCall(
                                           [&] {
                                             return in.attention_mask.defined()
                                                        ? (in.attention_mask != 0).sum().item<int64_t>()
                                                        : in.input_ids.size(1);
                                           },
                                           "evaluation set"));
      impl->prompts.push_back(i);
      impl->prompt_tokens.push_back(tokens);
      ++n;
    }
  }
  RETURN_IF_ERROR(impl->set.To(model->device()));
  return std::unique_ptr<Evaluator>(new Evaluator(std::move(impl)));
}

absl::Status Evaluator::Validate(const fs::path& scheme_dir) const {
  ASSIGN_OR_RETURN(DirHandle dir, DirHandle::Open(scheme_dir));
  RETURN_IF_ERROR(dir.CheckPlainTree());
  RETURN_IF_ERROR(ReadSchemeManifest(dir.ProcPath()).status());
  return Checkpoint::Open(dir.ProcPath()).status();
}

std::map<std::string, double> EvalSummary::AsMetrics() const {
  return {{"eval_perplexity_base", perplexity_base},
          {"eval_perplexity", perplexity},
          {"eval_perplexity_delta", perplexity_delta},
          {"eval_logit_mse_last_token", logit_mse},
          {"eval_logit_kl_last_token", logit_kl},
          {"eval_generation_agreement", generation_agreement},
          {"eval_generation_finite", generation_finite ? 1.0 : 0.0},
          {"eval_tokens_per_second", scheme_tokens_per_second},
          {"eval_seconds", seconds}};
}

// What Evaluate measures of one scheme and how its numbers compare with the base's.
struct Evaluator::Impl::SchemeRun {
  Pass pass;
  std::vector<Generation> generation;
  double metrics_seconds = 0, generation_seconds = 0;
};

absl::StatusOr<Evaluator::Impl::SchemeRun> Evaluator::Impl::RunScheme(const SchemeOverlay& overlay,
                                                                      const ProgressFn& progress,
                                                                      const std::atomic<bool>* cancel) {
  SchemeRun r;
  OverlayGuard guard(overlay);
  auto t = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(r.pass, RunPass(progress, 0.45, 0.85, cancel));
  r.metrics_seconds = Seconds(t);
  t = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(r.generation, Generate(progress, 0.85, 0.98, cancel));
  r.generation_seconds = Seconds(t);
  return r;
}

absl::StatusOr<ojson> Evaluator::Impl::CompareLogits(const Pass& q, EvalSummary* out) {
  std::vector<double> mse, kl;
  RETURN_IF_ERROR(TorchCall(
      [&] {
        mse = ToVector(LogitMse(base.last_logits, q.last_logits));
        kl = ToVector(LogitKl(base.last_logits, q.last_logits));
      },
      "evaluation metrics"));
  const int64_t n = set.num_samples();
  const bool any_images = std::find(has_images.begin(), has_images.end(), true) != has_images.end();
  const char* over = any_images ? "samples_with_images" : "all_samples";
  std::vector<double> mse_over, kl_over, dnll;
  double base_nll = 0, scheme_nll = 0, tokens = 0;
  ojson per_sample = ojson::array();
  for (int64_t i = 0; i < n; ++i) {
    if (!any_images || has_images[i]) {
      mse_over.push_back(mse[i]);
      kl_over.push_back(kl[i]);
    }
    dnll.push_back(q.nll[i] - base.nll[i]);
    base_nll += base.nll[i];
    scheme_nll += q.nll[i];
    tokens += base.tokens[i];
    per_sample.push_back({{"index", i},
                          {"has_images", static_cast<bool>(has_images[i])},
                          {"tokens", static_cast<int64_t>(base.tokens[i])},
                          {"nll_base", base.nll[i]},
                          {"nll_scheme", q.nll[i]},
                          {"logit_mse_last_token", mse[i]},
                          {"logit_kl_last_token", kl[i]}});
  }
  if (tokens > 0) {
    out->perplexity_base = std::exp(base_nll / tokens);
    out->perplexity = std::exp(scheme_nll / tokens);
  }
  out->perplexity_delta = out->perplexity - out->perplexity_base;
  const MeanCi d = RatioWithCi(dnll, base.tokens);
  out->perplexity_delta_lo = out->perplexity_base * std::expm1(d.lo);
  out->perplexity_delta_hi = out->perplexity_base * std::expm1(d.hi);
  const MeanCi m = MeanWithCi(mse_over), k = MeanWithCi(kl_over);
  out->logit_mse = m.mean, out->logit_mse_lo = m.lo, out->logit_mse_hi = m.hi;
  out->logit_kl = k.mean, out->logit_kl_lo = k.lo, out->logit_kl_hi = k.hi;
  ojson j;
  j["summary"] = {{"perplexity",
                   {{"base", out->perplexity_base},
                    {"scheme", out->perplexity},
                    {"delta", out->perplexity_delta},
                    {"delta_ci95", {out->perplexity_delta_lo, out->perplexity_delta_hi}},
                    {"tokens", static_cast<int64_t>(tokens)},
                    {"samples", n}}},
                  {"logit_mse_last_token", CiJson(m, over)},
                  {"logit_kl_last_token", CiJson(k, over)}};
  j["per_sample"] = std::move(per_sample);
  return j;
}

ojson Evaluator::Impl::CompareGenerations(const std::vector<Generation>& gen, EvalSummary* out) {
  ojson prompts_json = ojson::array();
  double agreement = 0, base_tokens = 0, base_s = 0, scheme_tokens = 0, scheme_s = 0;
  for (size_t i = 0; i < gen.size(); ++i) {
    const Generation& b = base_generation[i];
    const Generation& g = gen[i];
    size_t agree = 0;
    while (agree < b.tokens.size() && agree < g.tokens.size() && b.tokens[agree] == g.tokens[agree]) ++agree;
    agreement += agree;
    // Decode throughput: one-token steps after the prefill.
    base_tokens += b.decode_steps, base_s += b.decode_seconds;
    scheme_tokens += g.decode_steps, scheme_s += g.decode_seconds;
    out->generation_finite = out->generation_finite && g.finite && b.finite;
    prompts_json.push_back({{"index", prompts[i]},
                            {"has_images", static_cast<bool>(has_images[prompts[i]])},
                            {"prompt_tokens", prompt_tokens[i]},
                            {"base_tokens", b.tokens},
                            {"scheme_tokens", g.tokens},
                            {"agreement", agree},
                            {"finite", g.finite},
                            {"base_finite", b.finite}});
  }
  if (!gen.empty()) out->generation_agreement = agreement / gen.size();
  out->scheme_tokens_per_second = scheme_s > 0 ? scheme_tokens / scheme_s : 0;
  return {{"max_new_tokens", options.generate_tokens},
          {"all_finite", out->generation_finite},
          {"mean_agreement", out->generation_agreement},
          {"base_tokens_per_second", base_s > 0 ? base_tokens / base_s : 0.0},
          {"scheme_tokens_per_second", out->scheme_tokens_per_second},
          {"prompts", std::move(prompts_json)}};
}

ojson Evaluator::Impl::Provenance(const SchemeManifest& manifest, const SchemeOverlay& overlay, const EvalSummary& out,
                                  int64_t with_images) {
  ojson j;
  j["format"] = "autoquant.evaluation.v1";
  j["scheme"] = manifest.scheme;
  j["producer"] = {{"name", "autoquant"}, {"version", AUTOQUANT_VERSION}};
  j["base_model_fingerprint"] = engine->model_fingerprint();
  j["eval_set"] = {{"path", fs::absolute(options.eval_set).string()},
                   {"fingerprint", fingerprint},
                   {"samples", set.num_samples()},
                   {"samples_with_images", with_images}};
  const double groups_total = manifest.num_groups;
  j["scheme_info"] = {
      {"coverage",
       manifest.coverage ? *manifest.coverage : (groups_total > 0 ? manifest.num_quantized / groups_total : 0.0)},
      {"coverage_requested", manifest.coverage.has_value()},
      {"effective_bits", manifest.effective_bits},
      {"groups_quantized", manifest.num_quantized},
      {"groups_total", manifest.num_groups},
      {"formats", FormatNames(manifest.search_space)},
      {"groups_by_format", GroupsByFormat(manifest)},
      {"quantized_linears", overlay.hooks.size()}};
  j["execution"] = {{"device", engine->device()},
                    {"dtype", engine->dtype()},
                    {"fp8_matmul", out.fp8_matmul},
                    {"scaled_mm_linears", overlay.scaled_mm_linears},
                    {"requantized_shards", overlay.requantized_shards},
                    // NVFP4 Linears run as vLLM's emulation computes them (nvfp4_linear.h): no machine here
                    // has a native FP4 GEMM (compute capability >= 10.0).
                    {"nvfp4_linears", overlay.nvfp4_linears},
                    {"nvfp4_matmul", overlay.nvfp4_linears > 0 ? "emulated" : "none"},
                    {"batch_size", options.batch_size}};
  return j;
}

absl::StatusOr<EvalSummary> Evaluator::Evaluate(const fs::path& scheme_dir, const ProgressFn& progress,
                                                const std::atomic<bool>* cancel) {
  const auto start = std::chrono::steady_clock::now();
  Impl& s = *impl_;
  // Held, and read through the handle: the scheme directory may be another user's (any directory under
  // the models root), who must not lead the evaluation's reads or its write outside it.
  ASSIGN_OR_RETURN(DirHandle dir, DirHandle::Open(scheme_dir));
  RETURN_IF_ERROR(dir.CheckPlainTree());
  ASSIGN_OR_RETURN(SchemeManifest manifest, ReadSchemeManifest(dir.ProcPath()));
  ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open(dir.ProcPath()));

  // Base numbers once per evaluator: the base model does not change.
  if (!s.base_done) {
    Report(progress, 0, "base model on the evaluation set (once per daemon)");
    ASSIGN_OR_RETURN(s.base, s.RunPass(progress, 0, 0.3, cancel));
    ASSIGN_OR_RETURN(s.base_generation, s.Generate(progress, 0.3, 0.4, cancel));
    s.base_done = true;
  }
  Report(progress, 0.4, "laying the scheme over the base model");
  ASSIGN_OR_RETURN(SchemeOverlay overlay, BuildSchemeOverlay(ckpt, s.engine->resident_model(), s.matmul));
  ASSIGN_OR_RETURN(Impl::SchemeRun run, s.RunScheme(overlay, progress, cancel));

  EvalSummary out;
  out.fp8_matmul = std::string(Fp8MatmulName(overlay.matmul));
  ASSIGN_OR_RETURN(ojson logits, s.CompareLogits(run.pass, &out));
  ojson generation = s.CompareGenerations(run.generation, &out);
  out.seconds = Seconds(start);

  ojson j = s.Provenance(manifest, overlay, out, samples_with_images());
  j["summary"] = std::move(logits["summary"]);
  j["per_sample"] = std::move(logits["per_sample"]);
  j["generation"] = std::move(generation);
  j["seconds"] = {{"metrics", run.metrics_seconds}, {"generation", run.generation_seconds}, {"total", out.seconds}};
  out.evaluation_json = scheme_dir / "layer-sensitivity" / "evaluation.json";
  ASSIGN_OR_RETURN(DirHandle sensitivity, dir.OpenDir("layer-sensitivity"));
  RETURN_IF_ERROR(sensitivity.WriteFileAtomic("evaluation.json", j.dump(2) + "\n"));
  Report(progress, 1,
         absl::StrCat("perplexity ", out.perplexity, " (base ", out.perplexity_base, "), KL ", out.logit_kl,
                      ", logit MSE ", out.logit_mse));
  return out;
}

}  // namespace autoquant
