// `autoquant submit` (one scheme), `autoquant sweep` (many, one baseline) and
// `autoquant eval` (evaluate an existing scheme).
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "client/cli/remote/job_view.h"
#include "client/cli/remote/remote_common.h"
#include "client/cli/remote/sweep_plan.h"
#include "core/jobs/job.h"
#include "core/quant/scheme_spec.h"
#include "core/util/status_macros.h"
#include "server/job_proto.h"

namespace autoquant::cli {
namespace {

// What a scheme is, besides its name and selection: the same flags as `quantize`.
struct SpecOptions {
  std::vector<std::string> disabled_layers;
  std::string method = "gradient";
  std::string format = "compressed-tensors";
  std::string formats;
  bool overwrite = false;
  bool include_vision = false;
  int calib_steps = 0;
  int score_steps = 0;
  int priority = 0;
  std::string idempotency_key;
  bool wait = false;
  bool evaluate = false;
};

void AddSpecOptions(CLI::App* cmd, SpecOptions* o) {
  cmd->add_option("--disabled-layers,--disable", o->disabled_layers,
                  "fnmatch patterns on module names; a match keeps its whole group in the base dtype");
  cmd->add_option("--method", o->method, "sensitivity method: gradient | kl_div");
  cmd->add_option("--format", o->format,
                  "export format: compressed-tensors (transformers, vLLM) | modelopt (vLLM, "
                  "TensorRT-LLM only)");
  cmd->add_option("--formats", o->formats,
                  "quantization formats searched, comma-separated: nvfp4, w4a16_nvfp4, fp8 (default fp8; two or "
                  "more need --effective-bits)");
  cmd->add_flag("--overwrite", o->overwrite, "replace an existing scheme directory written by autoquant");
  cmd->add_flag("--include-vision", o->include_vision, "also quantize the vision tower's Linears");
  cmd->add_flag("--evaluate", o->evaluate,
                "evaluate each scheme against the base model once written (the daemon needs --eval-set)");
  cmd->add_option("--calib-steps", o->calib_steps, "calibration batches (0: all)");
  cmd->add_option("--score-steps", o->score_steps, "scoring batches (0: up to 128 samples)");
  cmd->add_option("--priority", o->priority, "higher runs first; equal priorities in submission order");
  cmd->add_option("--idempotency-key", o->idempotency_key, "makes a retried submit return the same job(s)");
  cmd->add_flag("--wait", o->wait, "wait for the job(s) with progress; exit code 1 if one failed or was cancelled");
}

absl::Status FillSpec(const SpecOptions& o, JobSpec* spec) {
  ASSIGN_OR_RETURN(spec->method, ParseScoreMethod(o.method));
  ASSIGN_OR_RETURN(spec->format, ParseExportFormat(o.format));
  ASSIGN_OR_RETURN(spec->formats, ParseFormatList(o.formats));
  spec->selection.disabled_layers = o.disabled_layers;
  spec->overwrite = o.overwrite;
  spec->include_vision = o.include_vision;
  spec->calib_steps = o.calib_steps;
  spec->score_steps = o.score_steps;
  spec->priority = o.priority;
  spec->evaluate = o.evaluate;
  return absl::OkStatus();
}

// Prints the submitted jobs, or waits for them and prints how they ended.
absl::Status Report(const Connection& c, const std::vector<v1::Job>& submitted, const CommonOptions& common, bool wait,
                    nlohmann::json extra) {
  std::vector<v1::Job> jobs = submitted;
  if (!common.json) {
    for (const auto& j : jobs) std::cout << "submitted " << JobLine(j) << "\n";
  }
  if (wait) {
    std::vector<std::string> ids;
    for (const auto& j : jobs) ids.push_back(j.id());
    ASSIGN_OR_RETURN(jobs, WaitForJobs(c, ids, common.json, std::cout));
  }
  if (common.json) {
    nlohmann::json j = std::move(extra);
    j["jobs"] = nlohmann::json::array();
    for (const auto& job : jobs) j["jobs"].push_back(ToJson(job));
    std::cout << j.dump(2) << "\n";
  }
  return wait ? AllSucceeded(jobs) : absl::OkStatus();
}

struct SubmitOptions {
  CommonOptions common;
  SpecOptions spec;
  std::string scheme;
  std::string coverage;
  std::string coverage_manifest;
  std::optional<double> effective_bits;
};

absl::Status RunSubmit(const SubmitOptions& o) {
  JobSpec spec;
  spec.scheme = o.scheme;
  if (!o.coverage.empty()) {
    ASSIGN_OR_RETURN(double c, ParseCoverage(o.coverage));
    spec.selection.coverage = c;
  }
  if (!o.coverage_manifest.empty()) {
    ASSIGN_OR_RETURN(spec.selection.coverage_manifest, ReadCoverageManifest(o.coverage_manifest));
  }
  spec.selection.effective_bits = o.effective_bits;
  RETURN_IF_ERROR(FillSpec(o.spec, &spec));
  v1::SubmitSchemeRequest req;
  SpecToProto(spec, req.mutable_spec());
  req.set_idempotency_key(o.spec.idempotency_key);
  ASSIGN_OR_RETURN(Connection c, Connect(o.common.connection));
  v1::Job job;
  auto ctx = c.Context();
  RETURN_IF_ERROR(c.Check(c.stub()->SubmitScheme(ctx.get(), req, &job), "SubmitScheme"));
  return Report(c, {job}, o.common, o.spec.wait, nlohmann::json::object());
}

struct SweepOptions {
  CommonOptions common;
  SpecOptions spec;
  std::string coverages;
  std::string effective_bits;
  std::string manifests_dir;
  std::string prefix;
  std::string suffix;
  std::string only;
  bool dry_run = false;
};

nlohmann::json PlanJson(const SweepPoint& p) {
  nlohmann::json j = {{"scheme", p.scheme}, {"source", p.source}};
  if (p.coverage) j["coverage"] = *p.coverage;
  if (p.effective_bits) j["effective_bits"] = *p.effective_bits;
  if (p.manifest) {
    j["coverage_manifest"] = {{"selected", p.manifest->selected_layers.size()},
                              {"dropped", p.manifest->dropped_layers.size()},
                              {"disabled_layers", p.manifest->disabled_layers}};
  }
  return j;
}

absl::Status RunSweep(const SweepOptions& o) {
  std::vector<SweepPoint> points;
  if (int(!o.coverages.empty()) + int(!o.effective_bits.empty()) + int(!o.manifests_dir.empty()) != 1) {
    return absl::InvalidArgumentError("give one of --coverages, --effective-bits and --coverage-manifests");
  }
  if (!o.coverages.empty()) {
    ASSIGN_OR_RETURN(points, CoveragePoints(o.coverages, o.prefix));
  } else if (!o.effective_bits.empty()) {
    ASSIGN_OR_RETURN(points, EffectiveBitsPoints(o.effective_bits, o.prefix));
  } else {
    ASSIGN_OR_RETURN(points, DiscoverCoverageManifests(o.manifests_dir, o.suffix));
  }
  if (!o.only.empty()) {
    ASSIGN_OR_RETURN(points, FilterOnly(std::move(points), o.only));
  }
  v1::SubmitSweepRequest req;
  for (const auto& p : points) {
    JobSpec spec;
    spec.scheme = p.scheme;
    spec.selection.coverage = p.coverage;
    spec.selection.coverage_manifest = p.manifest;
    spec.selection.effective_bits = p.effective_bits;
    RETURN_IF_ERROR(FillSpec(o.spec, &spec));
    SpecToProto(spec, req.add_points());
  }
  req.set_idempotency_key(o.spec.idempotency_key);
  if (o.dry_run) {
    if (o.common.json) {
      nlohmann::json j = {{"dry_run", true}, {"points", nlohmann::json::array()}};
      for (const auto& p : points) j["points"].push_back(PlanJson(p));
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << "dry run: " << points.size() << " scheme(s) would be submitted, nothing was\n";
      for (const auto& p : points) {
        std::cout << "  " << p.scheme << "  ";
        if (p.coverage) std::cout << "coverage " << *p.coverage << " (" << p.source << ")\n";
        if (p.effective_bits) std::cout << "effective bits " << *p.effective_bits << "\n";
        if (p.manifest) {
          std::cout << "manifest " << p.source << " (" << p.manifest->selected_layers.size() << " selected, "
                    << p.manifest->dropped_layers.size() << " dropped)\n";
        }
      }
    }
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(Connection c, Connect(o.common.connection));
  v1::SubmitSweepResponse resp;
  auto ctx = c.Context();
  RETURN_IF_ERROR(c.Check(c.stub()->SubmitSweep(ctx.get(), req, &resp), "SubmitSweep"));
  if (!o.common.json) std::cout << "sweep " << resp.sweep_id() << "\n";
  return Report(c, {resp.jobs().begin(), resp.jobs().end()}, o.common, o.spec.wait,
                {{"sweep_id", resp.sweep_id()}, {"dry_run", false}});
}

struct EvalCommandOptions {
  CommonOptions common;
  std::vector<std::string> schemes;
  int priority = 0;
  std::string idempotency_key;
  bool wait = false;
};

absl::Status RunEval(const EvalCommandOptions& o) {
  ASSIGN_OR_RETURN(Connection c, Connect(o.common.connection));
  std::vector<v1::Job> jobs;
  for (const auto& scheme : o.schemes) {
    v1::EvaluateSchemeRequest req;
    req.set_scheme(scheme);
    req.set_priority(o.priority);
    if (!o.idempotency_key.empty()) req.set_idempotency_key(absl::StrCat(o.idempotency_key, "/", scheme));
    v1::Job job;
    auto ctx = c.Context();
    RETURN_IF_ERROR(c.Check(c.stub()->EvaluateScheme(ctx.get(), req, &job), "EvaluateScheme"));
    jobs.push_back(std::move(job));
  }
  return Report(c, jobs, o.common, o.wait, nlohmann::json::object());
}

}  // namespace

void AddEvalCommand(CLI::App& app, CommandResult result) {
  auto o = std::make_shared<EvalCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Queue the evaluation of existing schemes against the daemon's base model (docs/evaluation.md)");
  cmd->add_option("schemes", o->schemes, "scheme directory names under the daemon's models root")->required();
  cmd->add_option("--priority", o->priority, "higher runs first; equal priorities in submission order");
  cmd->add_option("--idempotency-key", o->idempotency_key,
                  "makes a retried eval return the same job(s) (per scheme: KEY/SCHEME)");
  cmd->add_flag("--wait", o->wait, "wait for the job(s) with progress; exit code 1 if one failed or was cancelled");
  AddCommonOptions(cmd, &o->common);
  cmd->callback([o, result] { result.Set(RunEval(*o)); });
}

void AddSubmitCommand(CLI::App& app, CommandResult result) {
  auto o = std::make_shared<SubmitOptions>();
  CLI::App* cmd = app.add_subcommand("submit", "Queue one scheme on a daemon");
  cmd->add_option("scheme", o->scheme, "the scheme's directory name under the daemon's models root")->required();
  auto* cov = cmd->add_option("--coverage", o->coverage, "fraction of groups in (0, 1], topXX or XX%");
  auto* man = cmd->add_option("--coverage-manifest", o->coverage_manifest, "seed-format coverage manifest (JSON)")
                  ->check(CLI::ExistingFile);
  auto* bits = cmd->add_option("--effective-bits", o->effective_bits, "average weight bits target in (0, 16)");
  cov->excludes(man)->excludes(bits);
  man->excludes(bits);
  AddSpecOptions(cmd, &o->spec);
  AddCommonOptions(cmd, &o->common);
  cmd->callback([o, result] { result.Set(RunSubmit(*o)); });
}

void AddSweepCommand(CLI::App& app, CommandResult result) {
  auto o = std::make_shared<SweepOptions>();
  CLI::App* cmd = app.add_subcommand("sweep", "Queue many schemes sharing one baseline on a daemon");
  auto* cov =
      cmd->add_option("--coverages", o->coverages, "comma-separated coverages: percentages (10,20,50), topXX or XX%");
  auto* man = cmd->add_option("--coverage-manifests", o->manifests_dir,
                              "directory of *_coverage_from_baseline.json in the seeds' layout "
                              "(DIR/<scheme>/layer-sensitivity/<scheme>_coverage_from_baseline.json)");
  auto* bits = cmd->add_option("--effective-bits", o->effective_bits,
                               "comma-separated average weight bits targets, e.g. 5,5.5,6,7,8 (names are "
                               "<prefix>bitsB)");
  cov->excludes(man)->excludes(bits);
  man->excludes(bits);
  cmd->add_option("--prefix", o->prefix, "scheme name prefix for --coverages and --effective-bits");
  cmd->add_option("--suffix", o->suffix, "appended to each discovered scheme's name (e.g. _v2)")->needs(man);
  cmd->add_option("--only", o->only, "keep only these points, e.g. top10,top50");
  cmd->add_flag("--dry-run", o->dry_run, "print the plan and submit nothing (no daemon needed)");
  AddSpecOptions(cmd, &o->spec);
  AddCommonOptions(cmd, &o->common);
  cmd->callback([o, result] { result.Set(RunSweep(*o)); });
}

}  // namespace autoquant::cli
