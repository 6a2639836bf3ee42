// ReadReportPoint: evaluation.json and the quant manifest of one scheme directory.
#include <algorithm>
#include <cmath>
#include <limits>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/eval/report.h"
#include "core/util/dir_handle.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Typed access to one parsed file; every error is InvalidArgument naming the
// file and the field's dotted path ("summary.perplexity.delta",
// "per_sample[3].nll_base").
class FieldReader {
 public:
  FieldReader(const fs::path& file, const json& node, std::string prefix = "")
      : file_(file), node_(node), prefix_(std::move(prefix)) {}

  // The value at `path` below this node; nullptr when absent and `optional`
  // (an explicit null counts as absent there).
  absl::StatusOr<const json*> Find(absl::string_view path, bool optional = false) const {
    const json* at = &node_;
    std::string walked = prefix_;
    for (absl::string_view key : absl::StrSplit(path, '.')) {
      if (!at->is_object()) return Error(walked, "is not an object");
      absl::StrAppend(&walked, walked.empty() ? "" : ".", key);
      auto it = at->find(std::string(key));
      if (it == at->end() || (optional && it->is_null())) {
        if (optional) return nullptr;
        return Error(walked, "is missing");
      }
      at = &*it;
    }
    return at;
  }

  absl::StatusOr<std::string> String(absl::string_view path) const {
    ASSIGN_OR_RETURN(const json* v, Find(path));
    if (!v->is_string()) return Error(Name(path), "is not a string");
    return v->get<std::string>();
  }
  absl::StatusOr<double> Number(absl::string_view path) const {
    ASSIGN_OR_RETURN(const json* v, Find(path));
    if (!v->is_number()) return Error(Name(path), "is not a number");
    return v->get<double>();
  }
  // A metric: JSON has no NaN, so the evaluation writes a non-finite value as null.
  absl::StatusOr<double> NumberOrNull(absl::string_view path) const {
    ASSIGN_OR_RETURN(const json* v, Find(path));
    if (v->is_null()) return kNaN;
    if (!v->is_number()) return Error(Name(path), "is not a number or null");
    return v->get<double>();
  }
  absl::StatusOr<int64_t> Integer(absl::string_view path) const {
    ASSIGN_OR_RETURN(const json* v, Find(path));
    if (!v->is_number_integer()) return Error(Name(path), "is not an integer");
    return v->get<int64_t>();
  }
  absl::StatusOr<bool> Bool(absl::string_view path) const {
    ASSIGN_OR_RETURN(const json* v, Find(path));
    if (!v->is_boolean()) return Error(Name(path), "is not a boolean");
    return v->get<bool>();
  }
  // [low, high]; null bounds are NaN.
  absl::StatusOr<std::pair<double, double>> Interval(absl::string_view path) const {
    ASSIGN_OR_RETURN(const json* v, Find(path));
    if (!v->is_array() || v->size() != 2) return Error(Name(path), "is not a [low, high] pair");
    double bound[2];
    for (int i = 0; i < 2; ++i) {
      const json& b = (*v)[i];
      if (b.is_null()) {
        bound[i] = kNaN;
      } else if (b.is_number()) {
        bound[i] = b.get<double>();
      } else {
        return Error(Name(path), "is not a [low, high] pair of numbers");
      }
    }
    return std::make_pair(bound[0], bound[1]);
  }
  // The array at `path` (absent → empty when `optional`).
  absl::StatusOr<const json*> Array(absl::string_view path, bool optional = false) const {
    ASSIGN_OR_RETURN(const json* v, Find(path, optional));
    if (v != nullptr && !v->is_array()) return Error(Name(path), "is not an array");
    return v;
  }
  // A reader for element `i` of the array at `path`.
  FieldReader Element(absl::string_view path, const json& array, size_t i) const {
    return FieldReader(file_, array[i], absl::StrCat(Name(path), "[", i, "]"));
  }
  // A reader for the object at `path`.
  FieldReader Sub(absl::string_view path, const json& object) const { return FieldReader(file_, object, Name(path)); }

  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_.string(), ": field '", field, "' ", what));
  }
  std::string Name(absl::string_view path) const {
    return prefix_.empty() ? std::string(path) : absl::StrCat(prefix_, ".", path);
  }

 private:
  const fs::path& file_;
  const json& node_;
  std::string prefix_;
};

// `rel` beneath `dir`, without following a symlink, a regular file of
// bounded size only (a scheme directory may be another user's: its files must
// neither block the reader nor lead it outside).
absl::StatusOr<json> ParseJsonFile(const DirHandle& dir, const std::string& rel) {
  const fs::path file = dir.path() / rel;
  ASSIGN_OR_RETURN(std::string text, dir.ReadRegular(rel, kMaxSchemeJsonBytes));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(file.string(), ": not valid JSON"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(file.string(), ": not a JSON object"));
  }
  return j;
}

absl::StatusOr<MetricSummary> ReadMetric(const FieldReader& r, absl::string_view name) {
  MetricSummary m;
  const std::string at = absl::StrCat("summary.", name);
  ASSIGN_OR_RETURN(m.mean, r.NumberOrNull(at + ".mean"));
  ASSIGN_OR_RETURN(auto ci, r.Interval(at + ".ci95"));
  std::tie(m.ci95_low, m.ci95_high) = ci;
  ASSIGN_OR_RETURN(m.samples, r.Integer(at + ".samples"));
  ASSIGN_OR_RETURN(m.over, r.String(at + ".over"));
  return m;
}

absl::StatusOr<GenerationSummary> ReadGeneration(const FieldReader& r) {
  GenerationSummary g;
  ASSIGN_OR_RETURN(g.max_new_tokens, r.Integer("max_new_tokens"));
  ASSIGN_OR_RETURN(g.all_finite, r.Bool("all_finite"));
  ASSIGN_OR_RETURN(g.mean_agreement, r.NumberOrNull("mean_agreement"));
  ASSIGN_OR_RETURN(g.base_tokens_per_second, r.NumberOrNull("base_tokens_per_second"));
  ASSIGN_OR_RETURN(g.scheme_tokens_per_second, r.NumberOrNull("scheme_tokens_per_second"));
  ASSIGN_OR_RETURN(const json* prompts, r.Array("prompts", /*optional=*/true));
  for (size_t i = 0; prompts != nullptr && i < prompts->size(); ++i) {
    FieldReader p = r.Element("prompts", *prompts, i);
    ASSIGN_OR_RETURN(bool finite, p.Bool("finite"));
    if (finite) continue;
    ASSIGN_OR_RETURN(int64_t index, p.Integer("index"));
    g.non_finite_prompts.push_back(index);
  }
  // all_finite is the evaluation's own verdict; a prompt marked non-finite must agree with it.
  if (!g.non_finite_prompts.empty()) g.all_finite = false;
  return g;
}

absl::Status ReadEvaluation(const fs::path& file, const json& j, ReportPoint& p) {
  FieldReader r(file, j);
  ASSIGN_OR_RETURN(std::string format, r.String("format"));
  if (format != kEvaluationFormat) {
    return r.Error("format", absl::StrCat("is '", format, "', not '", kEvaluationFormat, "'"));
  }
  ASSIGN_OR_RETURN(p.scheme, r.String("scheme"));
  // The name becomes a file name below: it must not climb out of the directory.
  if (p.scheme.empty() || p.scheme == "." || p.scheme == ".." || p.scheme.find('/') != std::string::npos) {
    return r.Error("scheme", absl::StrCat("'", p.scheme, "' is not a scheme name"));
  }
  ASSIGN_OR_RETURN(p.base_model_fingerprint, r.String("base_model_fingerprint"));
  ASSIGN_OR_RETURN(p.eval_set_path, r.String("eval_set.path"));
  ASSIGN_OR_RETURN(p.eval_set_fingerprint, r.String("eval_set.fingerprint"));
  ASSIGN_OR_RETURN(p.eval_samples, r.Integer("eval_set.samples"));
  ASSIGN_OR_RETURN(p.eval_samples_with_images, r.Integer("eval_set.samples_with_images"));

  ASSIGN_OR_RETURN(p.coverage, r.Number("scheme_info.coverage"));
  if (!(p.coverage >= 0 && p.coverage <= 1)) {
    return r.Error("scheme_info.coverage", absl::StrCat("is ", p.coverage, ", not a fraction in [0, 1]"));
  }
  ASSIGN_OR_RETURN(const json* requested, r.Find("scheme_info.coverage_requested", /*optional=*/true));
  if (requested != nullptr) {
    ASSIGN_OR_RETURN(p.coverage_requested, r.Bool("scheme_info.coverage_requested"));
  }
  ASSIGN_OR_RETURN(p.effective_bits, r.Number("scheme_info.effective_bits"));
  ASSIGN_OR_RETURN(p.groups_quantized, r.Integer("scheme_info.groups_quantized"));
  ASSIGN_OR_RETURN(p.groups_total, r.Integer("scheme_info.groups_total"));
  ASSIGN_OR_RETURN(const json* formats, r.Find("scheme_info.formats", /*optional=*/true));
  if (formats != nullptr) {
    if (!formats->is_array() || formats->empty()) return r.Error("scheme_info.formats", "is not a list of formats");
    std::vector<std::string> names;
    for (const json& f : *formats) {
      if (!f.is_string()) return r.Error("scheme_info.formats", "is not a list of format names");
      names.push_back(f.get<std::string>());
    }
    p.format_set = absl::StrJoin(names, "+");
  }
  ASSIGN_OR_RETURN(const json* by_format, r.Find("scheme_info.groups_by_format", /*optional=*/true));
  if (by_format != nullptr) {
    if (!by_format->is_object()) return r.Error("scheme_info.groups_by_format", "is not an object");
    for (const auto& [name, n] : by_format->items()) {
      ASSIGN_OR_RETURN(p.groups_by_format[name], r.Integer("scheme_info.groups_by_format." + name));
    }
  }

  PerplexitySummary& ppl = p.perplexity;
  ASSIGN_OR_RETURN(ppl.base, r.NumberOrNull("summary.perplexity.base"));
  ASSIGN_OR_RETURN(ppl.scheme, r.NumberOrNull("summary.perplexity.scheme"));
  ASSIGN_OR_RETURN(ppl.delta, r.NumberOrNull("summary.perplexity.delta"));
  ASSIGN_OR_RETURN(auto delta_ci, r.Interval("summary.perplexity.delta_ci95"));
  std::tie(ppl.delta_ci95_low, ppl.delta_ci95_high) = delta_ci;
  ASSIGN_OR_RETURN(ppl.tokens, r.Integer("summary.perplexity.tokens"));
  ASSIGN_OR_RETURN(ppl.samples, r.Integer("summary.perplexity.samples"));
  ASSIGN_OR_RETURN(p.logit_mse_last_token, ReadMetric(r, "logit_mse_last_token"));
  ASSIGN_OR_RETURN(p.logit_kl_last_token, ReadMetric(r, "logit_kl_last_token"));

  ASSIGN_OR_RETURN(const json* samples, r.Array("per_sample"));
  for (size_t i = 0; i < samples->size(); ++i) {
    FieldReader s = r.Element("per_sample", *samples, i);
    SampleNumbers n;
    ASSIGN_OR_RETURN(n.index, s.Integer("index"));
    ASSIGN_OR_RETURN(n.nll_base, s.NumberOrNull("nll_base"));
    ASSIGN_OR_RETURN(n.nll_scheme, s.NumberOrNull("nll_scheme"));
    ASSIGN_OR_RETURN(n.logit_mse_last_token, s.NumberOrNull("logit_mse_last_token"));
    ASSIGN_OR_RETURN(n.logit_kl_last_token, s.NumberOrNull("logit_kl_last_token"));
    p.per_sample.push_back(n);
  }

  ASSIGN_OR_RETURN(const json* generation, r.Find("generation", /*optional=*/true));
  if (generation != nullptr) {
    if (!generation->is_object()) return r.Error("generation", "is not an object");
    ASSIGN_OR_RETURN(p.generation, ReadGeneration(r.Sub("generation", *generation)));
  }
  return absl::OkStatus();
}

// The manifest's selection and digests; FailedPrecondition when the evaluation
// next to it describes another export.
absl::Status ReadManifest(const fs::path& file, const json& j, ReportPoint& p) {
  FieldReader r(file, j);
  ASSIGN_OR_RETURN(std::string scheme, r.String("scheme"));
  ASSIGN_OR_RETURN(double bits, r.Number("effective_bits"));
  ASSIGN_OR_RETURN(int64_t groups, r.Integer("num_groups"));
  ASSIGN_OR_RETURN(int64_t quantized, r.Integer("num_quantized"));
  const bool same_bits = std::abs(bits - p.effective_bits) <= 1e-6 * std::max(1.0, std::abs(bits));
  if (scheme != p.scheme || !same_bits || groups != p.groups_total || quantized != p.groups_quantized) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: evaluation.json describes scheme '%s' (%.6g effective bits, %d of %d "
                        "groups quantized) but its quant manifest says '%s' (%.6g bits, %d of %d): "
                        "the evaluation is stale; evaluate the scheme again",
                        p.dir.string(), p.scheme, p.effective_bits, p.groups_quantized, p.groups_total, scheme, bits,
                        quantized, groups));
  }
  ASSIGN_OR_RETURN(const json* integrity, r.Find("integrity", /*optional=*/true));
  if (integrity == nullptr) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string algorithm, r.String("integrity.algorithm"));
  if (algorithm != "sha256") {
    return r.Error("integrity.algorithm", absl::StrCat("is '", algorithm, "', not 'sha256'"));
  }
  ASSIGN_OR_RETURN(const json* tensors, r.Find("integrity.tensors"));
  if (!tensors->is_object()) return r.Error("integrity.tensors", "is not an object");
  std::map<std::string, ReportTensorDigest> digests;
  for (const auto& [name, t] : tensors->items()) {
    const std::string field = absl::StrCat("integrity.tensors.", name);
    if (!t.is_object()) return r.Error(field, "is not an object");
    FieldReader tr = r.Sub(field, t);
    ReportTensorDigest d;
    ASSIGN_OR_RETURN(d.file, tr.String("file"));
    ASSIGN_OR_RETURN(d.sha256, tr.String("sha256"));
    digests[name] = std::move(d);
  }
  p.digests = std::move(digests);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ReportPoint> ReadReportPoint(const fs::path& scheme_dir) {
  std::error_code ec;
  auto opened = DirHandle::Open(scheme_dir);
  if (absl::IsNotFound(opened.status())) {
    return absl::NotFoundError(absl::StrCat("no scheme directory ", scheme_dir.string()));
  }
  if (!opened.ok()) return opened.status();
  const DirHandle& dir = *opened;
  ReportPoint p;
  p.dir = fs::absolute(scheme_dir, ec).lexically_normal();
  if (ec) p.dir = scheme_dir;
  const fs::path sensitivity = scheme_dir / "layer-sensitivity";
  const fs::path eval_file = sensitivity / "evaluation.json";
  if (absl::IsNotFound(dir.IdOf("layer-sensitivity").status()) ||
      (dir.OpenDir("layer-sensitivity").ok() &&
       absl::IsNotFound(dir.OpenDir("layer-sensitivity")->IdOf("evaluation.json").status()))) {
    std::string name = p.dir.filename().string();
    if (name.empty()) name = p.dir.parent_path().filename().string();
    return absl::NotFoundError(absl::StrCat("no evaluation.json in ", scheme_dir.string(),
                                            ": evaluate it first with `autoquant eval ", name,
                                            "` or submit with --evaluate"));
  }
  ASSIGN_OR_RETURN(json eval, ParseJsonFile(dir, "layer-sensitivity/evaluation.json"));
  RETURN_IF_ERROR(ReadEvaluation(eval_file, eval, p));
  const fs::path manifest_file = sensitivity / (p.scheme + "_quant_manifest.json");
  const std::string manifest_rel = "layer-sensitivity/" + p.scheme + "_quant_manifest.json";
  auto manifest_dir = dir.OpenDir("layer-sensitivity");
  if (manifest_dir.ok() && p.scheme.find('/') == std::string::npos &&
      absl::IsNotFound(manifest_dir->IdOf(p.scheme + "_quant_manifest.json").status())) {
    return absl::NotFoundError(absl::StrCat(scheme_dir.string(), ": evaluation.json names scheme '", p.scheme,
                                            "' but there is no ", manifest_file.string()));
  }
  ASSIGN_OR_RETURN(json manifest, ParseJsonFile(dir, manifest_rel));
  RETURN_IF_ERROR(ReadManifest(manifest_file, manifest, p));
  return p;
}

}  // namespace autoquant
