#include "client/cli/quantize_command.h"

#include <cmath>
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/interrupt.h"
#include "client/cli/leftovers.h"
#include "core/engine/engine.h"
#include "core/scheme/manifests.h"
#include "core/util/file_util.h"
#include "core/util/path_guard.h"
#include "core/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace autoquant::cli {

namespace {

std::filesystem::path DefaultBaselineCache() {
  const char* cache = std::getenv("AUTOQUANT_CACHE");
  if (cache) return std::filesystem::path(cache) / "baselines";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : "/tmp") / ".cache" / "autoquant" / "baselines";
}

// Prints a line per phase change and per 10% within a phase.
ProgressFn StderrProgress(std::ostream& log) {
  auto last = std::make_shared<std::pair<Phase, int>>(Phase::kLoad, -1);
  return [&log, last](const ProgressEvent& e) {
    int decile = static_cast<int>(std::floor(e.fraction * 10));
    if (!e.warning && e.phase == last->first && decile == last->second && e.message.empty()) return;
    *last = {e.phase, decile};
    if (e.warning) {
      log << "autoquant: warning: " << e.message << "\n";
      return;
    }
    log << absl::StrFormat("[%s] %3.0f%%%s%s\n", PhaseName(e.phase), e.fraction * 100, e.message.empty() ? "" : "  ",
                           e.message);
  };
}

}  // namespace

absl::Status RunQuantize(const QuantizeOptions& o, std::ostream& out, std::ostream& log) {
  // Everything checkable from the flags alone, before the model is loaded.
  SchemeRequest req;
  req.out_dir = o.out;
  req.scheme = o.scheme;
  ASSIGN_OR_RETURN(req.method, ParseScoreMethod(o.method));
  ASSIGN_OR_RETURN(req.format, ParseExportFormat(o.format));
  ASSIGN_OR_RETURN(req.formats, ParseFormatList(o.formats));
  req.calib_steps = o.calib_steps;
  req.score_steps = o.score_steps;
  req.include_vision = o.include_vision;
  req.overwrite = o.overwrite;
  ASSIGN_OR_RETURN(req.layout, ParseExportLayout(o.layout));
  // Beside the output by default: links need the scheme's filesystem. No job store here, so no records:
  // every piece is produced and an existing blob reused only when it verifies by content.
  if (o.blob_store.empty()) {
    const std::filesystem::path parent = std::filesystem::path(o.out).parent_path();
    req.blob_store = parent.empty() ? std::filesystem::path(".") : parent;
    req.blob_store_below = ".autoquant/blobs";
  } else {
    req.blob_store = o.blob_store;
  }
  req.selection.disabled_layers = o.disabled_layers;
  req.selection.effective_bits = o.effective_bits;
  if (o.coverage_given) {
    ASSIGN_OR_RETURN(double c, ParseCoverage(o.coverage));
    req.selection.coverage = c;
  }
  if (!o.coverage_manifest.empty()) {
    auto text = ReadFile(o.coverage_manifest);
    if (!text.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--coverage-manifest: ", text.status().message()));
    }
    auto j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_discarded()) return absl::InvalidArgumentError(o.coverage_manifest + ": not valid JSON");
    ASSIGN_OR_RETURN(CoverageManifest m, ParseCoverageManifest(j, o.coverage_manifest));
    req.selection.coverage_manifest = m;
  }
  if (absl::Status v = ValidateSchemeSpec(req); !v.ok()) {
    // Core names the request's fields; here they are flags.
    return absl::InvalidArgumentError(
        absl::StrCat(v.message(),
                     " (flags: --coverage, --coverage-manifest, --effective-bits, --calib-steps, "
                     "--score-steps, --batch-size)"));
  }

  EngineOptions eo;
  eo.model_dir = o.model;
  eo.calib_path = o.calib;
  eo.device = o.device;
  eo.dtype = o.dtype;
  eo.batch_size = o.batch_size;
  eo.baseline_cache = o.baseline_cache.empty() ? DefaultBaselineCache() : std::filesystem::path(o.baseline_cache);
  // The output rules need no model: check them before loading one.
  RETURN_IF_ERROR(CheckOutputPath({.path = req.out_dir,
                                   .kind = OutputKind::kDirectory,
                                   .overwrite = req.overwrite,
                                   .what = "output directory",
                                   .is_ours = RecogniseSchemeOutput},
                                  {{eo.model_dir, "the base model directory"},
                                   {eo.calib_path, "the calibration file"},
                                   {eo.baseline_cache, "the baseline cache"}}));
  RemoveLeftoversBeside(req.out_dir, log);

  ProgressFn progress = StderrProgress(log);
  ASSIGN_OR_RETURN(auto engine, Engine::Create(eo, progress));
  RETURN_IF_ERROR(engine->ValidateScheme(req));
  ASSIGN_OR_RETURN(SchemeResult r, engine->RunScheme(req, progress, InstallInterruptHandler()));
  log << absl::StrFormat("wrote %s: %d of %d groups quantized, effective bits %.4f (baseline %s)\n", r.out_dir.string(),
                         r.groups_quantized, r.groups_total, r.effective_bits,
                         r.baseline_reused ? "reused" : "computed");
  if (o.json) {
    nlohmann::ordered_json j = r.ToJson();
    j["scoring_passes"] = engine->scoring_passes();
    j["device"] = engine->device();
    j["dtype"] = engine->dtype();
    out << j.dump(2) << "\n";
  }
  return absl::OkStatus();
}

void AddQuantizeCommand(CLI::App& app, absl::Status* status) {
  auto o = std::make_shared<QuantizeOptions>();
  CLI::App* cmd = app.add_subcommand("quantize", "Produce one AutoQuant scheme checkpoint offline");
  cmd->footer(
      "Give exactly one selection: --coverage, --coverage-manifest or --effective-bits (--coverage 1 quantizes "
      "every group).");
  cmd->add_option("--model", o->model, "base checkpoint directory (never written)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--calib", o->calib, "calibration set (autoquant calib synth format; never written)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o->out, "output scheme directory (not inside or around an input)")->required();
  cmd->add_option("--scheme", o->scheme, "scheme name (default: the output directory's name)");
  // Exactly-one is checked in RunQuantize so that it exits like every other bad request.
  CLI::Option* coverage =
      cmd->add_option("--coverage", o->coverage,
                      "fraction of enabled groups to quantize, least sensitive first: 0.1, 10%, top10; 1 = all");
  cmd->add_option("--coverage-manifest", o->coverage_manifest,
                  "seed coverage manifest (selected_layers + dropped_layers [+ disabled_layers])");
  cmd->add_option("--disabled-layers,--disable", o->disabled_layers,
                  "fnmatch pattern on module names; disables the whole group (repeatable; merged with a "
                  "manifest's disabled_layers)");
  cmd->add_option("--effective-bits", o->effective_bits, "average weight bits target in (0, 16), searched exactly");
  cmd->add_option("--method", o->method, "sensitivity method: gradient | kl_div");
  cmd->add_option("--format", o->format,
                  "export format: compressed-tensors (transformers, vLLM) | modelopt (vLLM, TensorRT-LLM only)");
  cmd->add_option("--formats", o->formats,
                  "quantization formats searched, comma-separated: nvfp4, w4a16_nvfp4, fp8 (default fp8; two or "
                  "more need --effective-bits)");
  cmd->add_option(
         "--layout", o->layout,
         "standalone (the scheme's own shards) | shared (each group's BF16 and quantized versions and the rest "
         "stored once as read-only blobs and hard-linked into the scheme; see --blob-store)")
      ->capture_default_str()
      ->check(CLI::IsMember({"standalone", "shared"}));
  cmd->add_option("--blob-store", o->blob_store,
                  "the shared layout's blob directory (default: .autoquant/blobs beside --out; on another "
                  "filesystem blobs are copied, not linked)");
  cmd->add_option("--calib-steps", o->calib_steps, "calibration batches (0 = all)");
  cmd->add_option("--score-steps", o->score_steps, "scoring batches (0 = up to 128 samples)");
  cmd->add_option("--batch-size", o->batch_size, "samples per batch");
  cmd->add_option("--device", o->device, "auto | cpu | cuda");
  cmd->add_option("--dtype", o->dtype, "auto | bfloat16 | float32");
  // The resolved default, so that --help shows where baselines go.
  o->baseline_cache = DefaultBaselineCache().string();
  cmd->add_option(
      "--baseline-cache", o->baseline_cache,
      "where baselines are cached (default: $AUTOQUANT_CACHE/baselines, else ~/.cache/autoquant/baselines)");
  cmd->add_flag("--include-vision", o->include_vision, "also quantize the vision tower's Linears");
  cmd->add_flag("--overwrite", o->overwrite, "replace an existing output directory, if it is a scheme of ours");
  cmd->add_flag("--json", o->json, "print a JSON summary on stdout");
  cmd->callback([o, status, coverage] {
    o->coverage_given = coverage->count() > 0;
    *status = RunQuantize(*o, std::cout, std::cerr);
  });
}

}  // namespace autoquant::cli
