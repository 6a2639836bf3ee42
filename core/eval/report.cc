// BuildReport: the points, the base point and the findings of report.json.
#include "core/eval/report.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace autoquant {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

ojson Interval(double low, double high) { return ojson::array({low, high}); }

ojson MetricJson(const MetricSummary& m) {
  return {{"mean", m.mean}, {"ci95", Interval(m.ci95_low, m.ci95_high)}, {"samples", m.samples}, {"over", m.over}};
}

ojson PointJson(const ReportPoint& p) {
  ojson j;
  j["scheme"] = p.scheme;
  j["dir"] = p.dir.string();
  j["coverage"] = p.coverage;
  j["coverage_requested"] = p.coverage_requested;
  j["effective_bits"] = p.effective_bits;
  j["groups"] = {{"quantized", p.groups_quantized}, {"total", p.groups_total}};
  j["formats"] = p.format_set;
  j["groups_by_format"] = ojson::object();
  for (const auto& [name, n] : p.groups_by_format) j["groups_by_format"][name] = n;
  j["base_model_fingerprint"] = p.base_model_fingerprint;
  j["eval_set_fingerprint"] = p.eval_set_fingerprint;
  const PerplexitySummary& ppl = p.perplexity;
  j["perplexity"] = {{"base", ppl.base},     {"scheme", ppl.scheme},
                     {"delta", ppl.delta},   {"delta_ci95", Interval(ppl.delta_ci95_low, ppl.delta_ci95_high)},
                     {"tokens", ppl.tokens}, {"samples", ppl.samples}};
  j["logit_mse_last_token"] = MetricJson(p.logit_mse_last_token);
  j["logit_kl_last_token"] = MetricJson(p.logit_kl_last_token);
  if (p.generation) {
    const GenerationSummary& g = *p.generation;
    j["generation"] = {{"agreement", g.mean_agreement},
                       {"max_new_tokens", g.max_new_tokens},
                       {"all_finite", g.all_finite},
                       {"tokens_per_second", g.scheme_tokens_per_second},
                       {"base_tokens_per_second", g.base_tokens_per_second}};
  } else {
    j["generation"] = nullptr;
  }
  return j;
}

// The base model as a point of the trade-off: nothing quantized, no degradation.
ojson BasePointJson(const std::vector<ReportPoint>& points) {
  const ReportPoint& first = points.front();
  double tps_sum = 0;
  int tps_n = 0;
  for (const ReportPoint& p : points) {
    if (p.generation && std::isfinite(p.generation->base_tokens_per_second)) {
      tps_sum += p.generation->base_tokens_per_second;
      ++tps_n;
    }
  }
  const MetricSummary zero_mse{0, 0, 0, first.logit_mse_last_token.samples, first.logit_mse_last_token.over};
  const MetricSummary zero_kl{0, 0, 0, first.logit_kl_last_token.samples, first.logit_kl_last_token.over};
  ojson j;
  j["scheme"] = "base";
  j["coverage"] = 0.0;
  j["effective_bits"] = 16.0;
  j["groups"] = {{"quantized", 0}, {"total", first.groups_total}};
  j["base_model_fingerprint"] = first.base_model_fingerprint;
  j["eval_set_fingerprint"] = first.eval_set_fingerprint;
  j["perplexity"] = {
      {"base", first.perplexity.base}, {"scheme", first.perplexity.base},   {"delta", 0.0},
      {"delta_ci95", Interval(0, 0)},  {"tokens", first.perplexity.tokens}, {"samples", first.perplexity.samples}};
  j["logit_mse_last_token"] = MetricJson(zero_mse);
  j["logit_kl_last_token"] = MetricJson(zero_kl);
  if (tps_n > 0) {
    j["generation"] = {{"tokens_per_second", tps_sum / tps_n}};
  } else {
    j["generation"] = nullptr;
  }
  return j;
}

std::string Short(const std::string& fingerprint) { return fingerprint.substr(0, 12); }

std::string InputsKey(const ReportPoint& p) { return p.base_model_fingerprint + "\n" + p.eval_set_fingerprint; }

// Points grouped by (base model, eval set), in order of first appearance.
std::vector<std::vector<size_t>> GroupByInputs(const std::vector<ReportPoint>& points) {
  std::vector<std::vector<size_t>> groups;
  std::map<std::string, size_t> where;
  for (size_t i = 0; i < points.size(); ++i) {
    auto [it, fresh] = where.emplace(InputsKey(points[i]), groups.size());
    if (fresh) groups.emplace_back();
    groups[it->second].push_back(i);
  }
  return groups;
}

std::string DescribeInputGroups(const std::vector<ReportPoint>& points,
                                const std::vector<std::vector<size_t>>& groups) {
  std::vector<std::string> parts;
  for (const auto& g : groups) {
    std::vector<std::string> names;
    for (size_t i : g) names.push_back(points[i].scheme);
    const ReportPoint& p = points[g.front()];
    parts.push_back(absl::StrFormat("%s on eval set %s (%s) with base model %s", absl::StrJoin(names, ", "),
                                    Short(p.eval_set_fingerprint), p.eval_set_path, Short(p.base_model_fingerprint)));
  }
  return absl::StrJoin(parts, "; ");
}

struct MetricView {
  const char* key;    // report.json's name
  const char* label;  // in messages
  double (*value)(const ReportPoint&);
  std::pair<double, double> (*ci)(const ReportPoint&);
};

const MetricView kMetrics[] = {
    {"logit_kl_last_token", "KL (last token)", [](const ReportPoint& p) { return p.logit_kl_last_token.mean; },
     [](const ReportPoint& p) {
       return std::make_pair(p.logit_kl_last_token.ci95_low, p.logit_kl_last_token.ci95_high);
     }},
    {"logit_mse_last_token", "logit MSE (last token)", [](const ReportPoint& p) { return p.logit_mse_last_token.mean; },
     [](const ReportPoint& p) {
       return std::make_pair(p.logit_mse_last_token.ci95_low, p.logit_mse_last_token.ci95_high);
     }},
    {"perplexity_delta", "perplexity delta", [](const ReportPoint& p) { return p.perplexity.delta; },
     [](const ReportPoint& p) { return std::make_pair(p.perplexity.delta_ci95_low, p.perplexity.delta_ci95_high); }},
};

std::string Pct(double fraction) { return absl::StrFormat("%.4g %%", fraction * 100); }

// (a) A scheme more aggressive than another of its format set (more coverage; with several formats,
// fewer effective bits) that degrades a metric less. `points` are sorted by coverage.
ojson Inversions(const std::vector<ReportPoint>& points, const std::vector<std::vector<size_t>>& groups) {
  ojson out = ojson::array();
  for (const MetricView& m : kMetrics) {
    for (const auto& g : groups) {
      for (size_t a = 0; a < g.size(); ++a) {
        for (size_t b = a + 1; b < g.size(); ++b) {
          // One curve per format set. Within one format more coverage is the more aggressive point;
          // within a mixed set (several formats, coverage often 1) fewer effective bits is.
          if (points[g[a]].format_set != points[g[b]].format_set) continue;
          const bool mixed = points[g[a]].format_set.find('+') != std::string::npos;
          const bool b_more = mixed ? points[g[b]].effective_bits < points[g[a]].effective_bits
                                    : points[g[b]].coverage > points[g[a]].coverage;
          const bool a_more = mixed ? points[g[a]].effective_bits < points[g[b]].effective_bits : false;
          if (!b_more && !a_more) continue;
          const ReportPoint& less = points[g[b_more ? a : b]];
          const ReportPoint& more = points[g[b_more ? b : a]];
          const double v_less = m.value(less), v_more = m.value(more);
          if (!std::isfinite(v_less) || !std::isfinite(v_more) || !(v_more < v_less)) continue;
          const auto [lo_less, hi_less] = m.ci(less);
          const auto [lo_more, hi_more] = m.ci(more);
          // NaN bounds compare false: an unknown interval does not count as overlapping.
          const bool overlap = lo_less <= hi_more && lo_more <= hi_less;
          ojson f;
          f["metric"] = m.key;
          f["more_coverage"] = {{"scheme", more.scheme},
                                {"coverage", more.coverage},
                                {"value", v_more},
                                {"ci95", Interval(lo_more, hi_more)}};
          f["less_coverage"] = {{"scheme", less.scheme},
                                {"coverage", less.coverage},
                                {"value", v_less},
                                {"ci95", Interval(lo_less, hi_less)}};
          f["within_noise"] = overlap;
          f["message"] = absl::StrFormat(
              "%s: %s (coverage %s) degrades less than %s (coverage %s): %.4g [%.4g, %.4g] vs %.4g "
              "[%.4g, %.4g]; %s",
              m.label, more.scheme, Pct(more.coverage), less.scheme, Pct(less.coverage), v_more, lo_more, hi_more,
              v_less, lo_less, hi_less,
              overlap ? "the 95 % intervals overlap (within noise)"
                      : "the 95 % intervals do not overlap (beyond noise: check the sensitivity "
                        "ranking)");
          out.push_back(std::move(f));
        }
      }
    }
  }
  return out;
}

std::string DigestSignature(const std::map<std::string, ReportTensorDigest>& digests) {
  std::string s;
  for (const auto& [name, d] : digests) absl::StrAppend(&s, name, "\n", d.sha256, "\n");
  return s;
}

// Exact, so that only bit-equal numbers match (%a is exact; NaN prints alike).
std::string SampleSignature(const std::vector<SampleNumbers>& samples) {
  std::string s;
  for (const SampleNumbers& n : samples) {
    absl::StrAppend(
        &s, absl::StrFormat("%d %a %a %a\n", n.index, n.nll_scheme, n.logit_mse_last_token, n.logit_kl_last_token));
  }
  return s;
}

bool SameAsBase(const std::vector<SampleNumbers>& samples) {
  if (samples.empty()) return false;
  return std::all_of(samples.begin(), samples.end(), [](const SampleNumbers& n) {
    return n.nll_scheme == n.nll_base && n.logit_mse_last_token == 0 && n.logit_kl_last_token == 0;
  });
}

std::vector<std::string> Names(const std::vector<ReportPoint>& points, const std::vector<size_t>& idx) {
  std::vector<std::string> names;
  for (size_t i : idx) names.push_back(points[i].scheme);
  return names;
}

// (b) Schemes that are the same model: equal digests for every tensor, or,
// failing digests, equal per-sample numbers; and schemes indistinguishable
// from the base.
ojson IdenticalSchemes(const std::vector<ReportPoint>& points, const std::vector<std::vector<size_t>>& groups) {
  ojson out = ojson::array();
  std::map<std::string, std::vector<size_t>> by_digest;
  std::vector<int> digest_group(points.size(), -1);
  for (size_t i = 0; i < points.size(); ++i) {
    if (points[i].digests && !points[i].digests->empty()) {
      by_digest[DigestSignature(*points[i].digests)].push_back(i);
    }
  }
  int next = 0;
  for (const auto& [sig, idx] : by_digest) {
    for (size_t i : idx) digest_group[i] = next;
    ++next;
    if (idx.size() < 2) continue;
    const std::vector<std::string> names = Names(points, idx);
    out.push_back(
        {{"schemes", names},
         {"basis", "tensor_digests"},
         {"message", absl::StrFormat("IDENTICAL SCHEMES: %s hold the same weights (equal SHA-256 for all %d "
                                     "tensors): these sweep points are one model, not %d",
                                     absl::StrJoin(names, ", "), points[idx.front()].digests->size(), idx.size())}});
  }
  // Per-sample numbers only compare within one eval set and base model.
  for (const auto& g : groups) {
    std::map<std::string, std::vector<size_t>> by_samples;
    for (size_t i : g) {
      if (!points[i].per_sample.empty()) {
        by_samples[SampleSignature(points[i].per_sample)].push_back(i);
      }
    }
    for (const auto& [sig, idx] : by_samples) {
      if (idx.size() < 2) continue;
      const bool explained = std::all_of(idx.begin(), idx.end(), [&](size_t i) {
        return digest_group[i] >= 0 && digest_group[i] == digest_group[idx.front()];
      });
      if (explained) continue;  // already reported by digests
      const bool all_without = std::all_of(idx.begin(), idx.end(), [&](size_t i) { return digest_group[i] < 0; });
      const std::vector<std::string> names = Names(points, idx);
      out.push_back({{"schemes", names},
                     {"basis", "per_sample_numbers"},
                     {"message", absl::StrFormat(
                                     all_without ? "IDENTICAL SCHEMES: %s have no tensor digests to compare, but every "
                                                   "per-sample number of their evaluations is equal (%d samples): "
                                                   "almost certainly the same weights"
                                                 : "IDENTICAL RESULTS: %s hold different tensors, yet every per-sample "
                                                   "number of their evaluations is equal (%d samples): the evaluation "
                                                   "may not have run the schemes' own weights",
                                     absl::StrJoin(names, ", "), points[idx.front()].per_sample.size())}});
    }
  }
  std::vector<std::string> as_base = {"base"};
  for (const ReportPoint& p : points) {
    if (SameAsBase(p.per_sample)) as_base.push_back(p.scheme);
  }
  if (as_base.size() > 1) {
    out.push_back(
        {{"schemes", as_base},
         {"basis", "per_sample_numbers"},
         {"message", absl::StrFormat("IDENTICAL TO BASE: %s: every per-sample KL and logit MSE is 0 and every "
                                     "NLL equals the base model's: nothing was quantized, or the evaluation "
                                     "ran the base weights",
                                     absl::StrJoin(as_base.begin() + 1, as_base.end(), ", "))}});
  }
  return out;
}

// (d) Schemes whose sanity generation produced a non-finite logit.
ojson NonFiniteGeneration(const std::vector<ReportPoint>& points) {
  ojson out = ojson::array();
  for (const ReportPoint& p : points) {
    if (!p.generation || p.generation->all_finite) continue;
    const auto& prompts = p.generation->non_finite_prompts;
    out.push_back(
        {{"scheme", p.scheme},
         {"prompts", prompts},
         {"message",
          absl::StrFormat(
              "NON-FINITE GENERATION: %s produced a non-finite logit while generating%s", p.scheme,
              prompts.empty() ? "" : absl::StrCat(" (eval-set prompts ", absl::StrJoin(prompts, ", "), ")"))}});
  }
  return out;
}

}  // namespace

absl::StatusOr<ojson> BuildReport(std::vector<ReportPoint> points, const ReportOptions& options) {
  if (points.empty()) return absl::InvalidArgumentError("no schemes to report");
  std::set<fs::path> dirs;
  for (const ReportPoint& p : points) {
    if (!dirs.insert(p.dir).second) {
      return absl::InvalidArgumentError(absl::StrCat(p.dir.string(), " is given more than once"));
    }
  }
  std::stable_sort(points.begin(), points.end(), [](const ReportPoint& a, const ReportPoint& b) {
    return std::tie(a.coverage, a.effective_bits, a.scheme) < std::tie(b.coverage, b.effective_bits, b.scheme);
  });
  const std::vector<std::vector<size_t>> groups = GroupByInputs(points);
  if (groups.size() > 1 && !options.allow_mixed_inputs) {
    return absl::InvalidArgumentError(
        absl::StrCat("the schemes were evaluated on different eval sets or base models, so their numbers are "
                     "not comparable: ",
                     DescribeInputGroups(points, groups),
                     ". Evaluate them all on one eval set against one base model, or allow mixed inputs "
                     "(autoquant report --allow-mixed-inputs)"));
  }

  const ReportPoint& first = points.front();
  ojson r;
  r["format"] = kReportFormat;
  r["producer"] = {{"name", "autoquant"}, {"version", AUTOQUANT_VERSION}};
  r["base_model_fingerprint"] = first.base_model_fingerprint;
  r["eval_set"] = {{"path", first.eval_set_path},
                   {"fingerprint", first.eval_set_fingerprint},
                   {"samples", first.eval_samples},
                   {"samples_with_images", first.eval_samples_with_images}};
  r["inputs_mixed"] = groups.size() > 1;
  r["base"] = BasePointJson(points);
  r["points"] = ojson::array();
  for (const ReportPoint& p : points) r["points"].push_back(PointJson(p));

  ojson mixed = ojson::array();
  if (groups.size() > 1) {
    for (const auto& g : groups) {
      const ReportPoint& p = points[g.front()];
      mixed.push_back({{"schemes", Names(points, g)},
                       {"base_model_fingerprint", p.base_model_fingerprint},
                       {"eval_set_fingerprint", p.eval_set_fingerprint},
                       {"eval_set_path", p.eval_set_path},
                       {"message", absl::StrFormat("MIXED INPUTS: %s evaluated on eval set %s (%s) with base model %s",
                                                   absl::StrJoin(Names(points, g), ", "), Short(p.eval_set_fingerprint),
                                                   p.eval_set_path, Short(p.base_model_fingerprint))}});
    }
  }
  r["findings"] = {{"identical_schemes", IdenticalSchemes(points, groups)},
                   {"inversions", Inversions(points, groups)},
                   {"mixed_inputs", std::move(mixed)},
                   {"non_finite_generation", NonFiniteGeneration(points)}};
  return r;
}

}  // namespace autoquant
