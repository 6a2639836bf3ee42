#include "core/quant/plan.h"

#include <cmath>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "core/util/status_macros.h"

namespace autoquant {
using json = nlohmann::json;

size_t Plan::num_quantized(const Baseline& b) const {
  size_t n = 0;
  for (size_t g = 0; g < format.size(); ++g) n += quantized(g, b) ? 1 : 0;
  return n;
}

absl::StatusOr<CoverageManifest> ParseCoverageManifest(const json& j, absl::string_view source) {
  CoverageManifest m;
  auto read = [&](const char* key, std::vector<std::string>* out) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end() || !it->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": coverage manifest has no '", key, "' list"));
    }
    for (const auto& v : *it) {
      if (!v.is_string()) return absl::InvalidArgumentError(absl::StrCat(source, ": '", key, "' holds a non-string"));
      out->push_back(v.get<std::string>());
    }
    return absl::OkStatus();
  };
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": coverage manifest is not an object"));
  RETURN_IF_ERROR(read("selected_layers", &m.selected_layers));
  RETURN_IF_ERROR(read("dropped_layers", &m.dropped_layers));
  return m;
}

absl::Status ValidatePartition(const CoverageManifest& m, const std::vector<std::string>& keys) {
  std::set<std::string> want(keys.begin(), keys.end());
  std::map<std::string, int> seen;
  for (const auto* list : {&m.selected_layers, &m.dropped_layers}) {
    for (const auto& k : *list) ++seen[k];
  }
  std::vector<std::string> missing, extra, dup;
  for (const auto& k : want) {
    if (!seen.count(k)) missing.push_back(k);
  }
  for (const auto& [k, n] : seen) {
    if (!want.count(k)) extra.push_back(k);
    if (n > 1) dup.push_back(k);
  }
  if (missing.empty() && extra.empty() && dup.empty()) return absl::OkStatus();
  auto list = [](const std::vector<std::string>& v) {
    const size_t kMax = 20;
    std::vector<std::string> head(v.begin(), v.begin() + std::min(v.size(), kMax));
    std::string s = absl::StrJoin(head, ", ");
    if (v.size() > kMax) absl::StrAppend(&s, ", ... (", v.size() - kMax, " more)");
    return s;
  };
  std::string msg = "coverage manifest does not partition the baseline's group keys:";
  if (!missing.empty()) absl::StrAppend(&msg, " missing ", missing.size(), " [", list(missing), "];");
  if (!extra.empty()) absl::StrAppend(&msg, " extra ", extra.size(), " [", list(extra), "];");
  if (!dup.empty()) absl::StrAppend(&msg, " duplicated ", dup.size(), " [", list(dup), "];");
  return absl::InvalidArgumentError(msg);
}

absl::StatusOr<double> ParseCoverage(absl::string_view text) {
  std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  absl::string_view t = lower;
  bool percent = false;
  if (absl::ConsumePrefix(&t, "top")) percent = true;
  if (absl::ConsumeSuffix(&t, "%")) percent = true;
  double v = 0;
  if (!absl::SimpleAtod(t, &v) || !std::isfinite(v)) {
    return absl::InvalidArgumentError(absl::StrCat("coverage '", text, "' is not a number (e.g. 0.1, 10%, top10)"));
  }
  if (percent || v > 1) v /= 100.0;
  if (v < 0 || v > 1) return absl::InvalidArgumentError(absl::StrCat("coverage '", text, "' is outside 0..100%"));
  return v;
}

absl::StatusOr<Plan> MakePlan(const Baseline& b, const SchemeSelection& s) {
  const size_t n = b.groups.size();
  if (s.coverage && s.coverage_manifest) {
    return absl::InvalidArgumentError("give either a coverage or a coverage manifest, not both");
  }
  Plan p;
  p.coverage = s.coverage;
  p.target_bits = s.effective_bits;
  p.disabled.assign(n, false);
  p.candidate.assign(n, true);

  // disabled_layers, with ModelOpt's whole-group rule, on the baseline's Linears.
  if (!s.disabled_layers.empty()) {
    ASSIGN_OR_RETURN(auto grouped, BuildGroups(b.linears, {.include_vision = b.inputs.include_vision,
                                                           .disabled_layers = s.disabled_layers}));
    std::map<std::string, bool> by_key;
    for (const auto& g : grouped) by_key[g.key] = g.disabled;
    for (size_t g = 0; g < n; ++g) p.disabled[g] = by_key[b.groups[g].key];
  }

  if (s.coverage_manifest) {
    std::vector<std::string> keys;
    for (const auto& g : b.groups) keys.push_back(g.key);
    RETURN_IF_ERROR(ValidatePartition(*s.coverage_manifest, keys));
    std::set<std::string> selected(s.coverage_manifest->selected_layers.begin(),
                                   s.coverage_manifest->selected_layers.end());
    for (size_t g = 0; g < n; ++g) p.candidate[g] = selected.count(b.groups[g].key) > 0;
  }
  for (size_t g = 0; g < n; ++g) p.candidate[g] = p.candidate[g] && !p.disabled[g];

  if (s.coverage) {
    if (!(*s.coverage >= 0 && *s.coverage <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("coverage ", *s.coverage, " is outside [0, 1]"));
    }
    size_t enabled = 0;
    for (size_t g = 0; g < n; ++g) enabled += p.candidate[g] ? 1 : 0;
    size_t take = static_cast<size_t>(std::floor(*s.coverage * double(enabled) + 0.5));
    std::vector<bool> keep(n, false);
    for (size_t r : b.ranking) {
      if (take == 0) break;
      if (p.candidate[r]) {
        keep[r] = true;
        --take;
      }
    }
    p.candidate = keep;
  }

  const size_t none = b.formats.size() - 1;
  p.format.assign(n, none);
  if (s.effective_bits) {
    double eb = *s.effective_bits;
    if (!(eb > 0 && eb <= 16)) {
      return absl::InvalidArgumentError(absl::StrCat("effective bits ", eb, " is outside (0, 16]"));
    }
    std::vector<SearchGroup> groups(n);
    for (size_t g = 0; g < n; ++g) {
      for (size_t f = 0; f < b.formats.size(); ++f) {
        if (f == none || p.candidate[g]) groups[g].candidates.push_back({b.scores[g][f], b.costs[g][f]});
      }
    }
    double budget = double(b.total_weight_numel) * eb / 16.0;
    auto r = SolveExact(groups, budget);
    if (r.status().code() == absl::StatusCode::kOutOfRange) {
      double min_cost = 0;
      for (const auto& g : groups) {
        double m = g.candidates[0].cost;
        for (const auto& c : g.candidates) m = std::min(m, c.cost);
        min_cost += m;
      }
      return absl::OutOfRangeError(absl::StrFormat(
          "effective bits %.4g is infeasible: with these candidates the minimum achievable is %.4f bits",
          eb, 16.0 * min_cost / double(b.total_weight_numel)));
    }
    RETURN_IF_ERROR(r.status());
    for (size_t g = 0; g < n; ++g) {
      // Non-candidates have NONE as their only choice.
      p.format[g] = p.candidate[g] ? static_cast<size_t>(r->choice[g]) : none;
    }
    p.search = *r;
  } else {
    for (size_t g = 0; g < n; ++g) {
      if (p.candidate[g]) p.format[g] = 0;  // most aggressive format first
    }
  }

  double cost = 0;
  for (size_t g = 0; g < n; ++g) {
    cost += b.costs[g][p.format[g]];
    p.total_score += b.scores[g][p.format[g]];
  }
  p.effective_bits = 16.0 * cost / double(b.total_weight_numel);
  return p;
}

CoverageManifest CoverageOf(const Plan& p, const Baseline& b) {
  CoverageManifest m;
  for (size_t r : b.ranking) {
    (p.quantized(r, b) ? m.selected_layers : m.dropped_layers).push_back(b.groups[r].key);
  }
  return m;
}

}  // namespace autoquant
