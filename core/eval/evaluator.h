// Evaluation of scheme checkpoints against the engine's resident base model
// (docs/evaluation.md): perplexity, last-token logit MSE and KL on a held-out
// evaluation set, and greedy sanity generation, with the scheme run as an FP8
// engine deploys it (core/scheme/scheme_overlay.h). Results go to the scheme's
// layer-sensitivity/evaluation.json.
//
//   ASSIGN_OR_RETURN(auto ev, Evaluator::Create(engine.get(), {.eval_set = "eval.safetensors"}));
//   ASSIGN_OR_RETURN(EvalSummary s, ev->Evaluate(models_root / "top50", progress, &cancel));
//
// Torch-free header (the daemon includes it). Not thread-safe: Evaluate runs
// where Engine::RunScheme runs (the daemon's worker), never beside it; the
// accessors are thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/engine/engine.h"

namespace autoquant {

struct EvalOptions {
  std::filesystem::path eval_set;  // calibration format; must share no sample with the calibration set
  int batch_size = 1;
  int generate_tokens = 16;         // new tokens per sanity prompt; 0 = no generation
  int generate_prompts = 2;         // prompts of each kind (text-only, with images)
  std::string fp8_matmul = "auto";  // auto | scaled_mm | emulated
};

struct EvalSummary {
  std::filesystem::path evaluation_json;
  std::string fp8_matmul;  // what ran: scaled_mm | emulated
  double perplexity_base = 0, perplexity = 0, perplexity_delta = 0;
  double perplexity_delta_lo = 0, perplexity_delta_hi = 0;
  double logit_mse = 0, logit_mse_lo = 0, logit_mse_hi = 0;
  double logit_kl = 0, logit_kl_lo = 0, logit_kl_hi = 0;
  double generation_agreement = 0;  // mean common-prefix length with the base, in tokens
  bool generation_finite = true;
  double scheme_tokens_per_second = 0;
  double seconds = 0;
  // The numbers as job result metrics ("eval_perplexity_delta", ...).
  std::map<std::string, double> AsMetrics() const;
};

class Evaluator {
 public:
  // Loads the evaluation set onto the engine's device. InvalidArgument for a
  // bad file, or one that shares samples with the calibration set (naming
  // the first shared pair) or is the calibration file itself.
  static absl::StatusOr<std::unique_ptr<Evaluator>> Create(Engine* engine, const EvalOptions& options);
  ~Evaluator();

  // Everything checkable before a job is queued: `scheme_dir` is a scheme
  // (a quant manifest and an FP8 checkpoint that opens). Thread-safe.
  absl::Status Validate(const std::filesystem::path& scheme_dir) const;

  // Evaluates the scheme in `scheme_dir` (base numbers are computed on the
  // first call and kept) and writes layer-sensitivity/evaluation.json
  // atomically. Codes of BuildSchemeOverlay, Cancelled when `cancel` is set
  // (checked per batch and per generated prompt), ResourceExhausted for OOM.
  absl::StatusOr<EvalSummary> Evaluate(const std::filesystem::path& scheme_dir, const ProgressFn& progress = nullptr,
                                       const std::atomic<bool>* cancel = nullptr);

  const EvalOptions& options() const;
  const std::string& fingerprint() const;  // SHA-256 of the evaluation set file
  int64_t samples() const;
  int64_t samples_with_images() const;

 private:
  struct Impl;
  explicit Evaluator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace autoquant
