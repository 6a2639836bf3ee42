#include "core/quant/plan.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string_view>
#include <unordered_set>

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
  auto read = [&](const char* key, bool required, std::vector<std::string>* out) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end() && !required) return absl::OkStatus();
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
  RETURN_IF_ERROR(read("selected_layers", true, &m.selected_layers));
  RETURN_IF_ERROR(read("dropped_layers", true, &m.dropped_layers));
  RETURN_IF_ERROR(read("disabled_layers", false, &m.disabled_layers));
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

namespace {

constexpr char kCoverageForms[] =
    "a coverage is a fraction in (0, 1] (0.1; 1 quantizes every group), topXX or XX% with XX in (0, 100]";

}  // namespace

absl::StatusOr<double> ParseCoverage(absl::string_view text) {
  std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  absl::string_view t = lower;
  const bool top = absl::ConsumePrefix(&t, "top");
  const bool percent = absl::ConsumeSuffix(&t, "%");
  double v = 0;
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("coverage '", text, "' ", why, ": ", kCoverageForms));
  };
  // SimpleAtod also reads "nan", "inf" and hex floats; only plain decimals are a coverage.
  if (t.empty() || t.find_first_not_of("0123456789.") != absl::string_view::npos || !absl::SimpleAtod(t, &v) ||
      !std::isfinite(v)) {
    return bad("is not a number in an accepted form");
  }
  if (top && percent) return bad("mixes topXX and XX%");
  if (top || percent) {
    if (!(v > 0 && v <= 100)) return bad("is outside (0, 100]");
    return v / 100.0;
  }
  if (!(v > 0 && v <= 1)) {
    return bad(v > 1 ? "is a bare number above 1 (write XX% or topXX for a percentage)" : "is not above 0");
  }
  return v;
}

std::vector<std::string> EffectiveDisabledLayers(const SchemeSelection& s) {
  std::vector<std::string> out;
  // A hash set, not a search of `out`: a request's patterns come by the thousand.
  std::unordered_set<std::string_view> seen;
  auto add = [&](const std::vector<std::string>& v) {
    for (const auto& p : v) {
      if (seen.insert(p).second) out.push_back(p);
    }
  };
  add(s.disabled_layers);
  if (s.coverage_manifest) add(s.coverage_manifest->disabled_layers);
  return out;
}

namespace {

// 16 x the least total cost any plan over these candidates can have / total numel.
double MinAchievableBits(const std::vector<QuantGroup>& groups, const std::vector<bool>& candidate,
                         const std::vector<Format>& formats) {
  double min_cost = 0, total = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    double m = Baseline::Cost(groups[g].weight_numel, formats.back());
    if (candidate[g]) {
      for (Format f : formats) m = std::min(m, Baseline::Cost(groups[g].weight_numel, f));
    }
    min_cost += m;
    total += double(groups[g].weight_numel);
  }
  return total > 0 ? 16.0 * min_cost / total : 16.0;
}

}  // namespace

absl::StatusOr<Candidates> SelectCandidates(const SchemeSelection& s, const std::vector<LinearDesc>& linears,
                                            const std::vector<QuantGroup>& groups, bool include_vision,
                                            const std::vector<Format>& formats) {
  RETURN_IF_ERROR(ValidateSelection(s));
  const size_t n = groups.size();
  Candidates c;
  c.disabled.assign(n, false);
  c.disabled_by.assign(n, {});
  c.candidate.assign(n, true);
  const std::vector<std::string> patterns = EffectiveDisabledLayers(s);
  if (!patterns.empty()) {
    // ModelOpt's whole-group rule, on every Linear of the model.
    ASSIGN_OR_RETURN(auto grouped,
                     BuildGroups(linears, {.include_vision = include_vision, .disabled_layers = patterns}));
    std::map<std::string, const QuantGroup*> by_key;
    for (const auto& g : grouped) by_key[g.key] = &g;
    for (size_t g = 0; g < n; ++g) {
      auto it = by_key.find(groups[g].key);
      if (it == by_key.end()) continue;
      c.disabled[g] = it->second->disabled;
      c.disabled_by[g] = it->second->disabled_by;
    }
  }
  if (s.coverage_manifest) {
    std::vector<std::string> keys;
    for (const auto& g : groups) keys.push_back(g.key);
    RETURN_IF_ERROR(ValidatePartition(*s.coverage_manifest, keys));
    std::set<std::string> selected(s.coverage_manifest->selected_layers.begin(),
                                   s.coverage_manifest->selected_layers.end());
    for (size_t g = 0; g < n; ++g) c.candidate[g] = selected.count(groups[g].key) > 0;
  }
  size_t candidates = 0;
  for (size_t g = 0; g < n; ++g) {
    c.enabled += c.disabled[g] ? 0 : 1;
    c.candidate[g] = c.candidate[g] && !c.disabled[g];
    candidates += c.candidate[g] ? 1 : 0;
  }
  if (candidates == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the selection leaves no group to quantize (", n - c.enabled, " of ", n, " groups disabled by ",
        patterns.empty()        ? "no pattern"
        : patterns.size() <= 10 ? absl::StrCat("disabled_layers [", absl::StrJoin(patterns, ", "), "]")
                                : absl::StrCat(patterns.size(), " disabled_layers patterns [",
                                               absl::StrJoin(patterns.begin(), patterns.begin() + 10, ", "), ", ...]"),
        s.coverage_manifest ? ", the rest not selected by the coverage manifest" : "", ")"));
  }
  if (s.coverage) {
    const size_t take = static_cast<size_t>(std::floor(*s.coverage * double(candidates) + 0.5));
    if (take == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "coverage %g selects no group: %d groups are enabled and floor(%g x %d + 0.5) = 0; the smallest "
          "coverage that selects one is %g",
          *s.coverage, candidates, *s.coverage, candidates, 0.5 / double(candidates)));
    }
  }
  if (s.effective_bits) {
    const double min_bits = MinAchievableBits(groups, c.candidate, formats);
    if (*s.effective_bits < min_bits - 1e-12) {
      return absl::OutOfRangeError(absl::StrFormat(
          "effective bits %.4g is infeasible: with these candidates the minimum achievable is %.4f bits",
          *s.effective_bits, min_bits));
    }
  }
  return c;
}

absl::StatusOr<Plan> MakePlan(const Baseline& b, const SchemeSelection& s) {
  const size_t n = b.groups.size();
  ASSIGN_OR_RETURN(Candidates c, SelectCandidates(s, b.linears, b.groups, b.inputs.include_vision, b.formats));
  Plan p;
  p.coverage = s.coverage;
  p.target_bits = s.effective_bits;
  p.disabled = c.disabled;
  p.disabled_by = c.disabled_by;
  p.disabled_layers = EffectiveDisabledLayers(s);
  p.candidate = c.candidate;

  if (s.coverage) {
    size_t candidates = 0;
    for (size_t g = 0; g < n; ++g) candidates += p.candidate[g] ? 1 : 0;
    size_t take = static_cast<size_t>(std::floor(*s.coverage * double(candidates) + 0.5));
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
    std::vector<SearchGroup> groups(n);
    for (size_t g = 0; g < n; ++g) {
      for (size_t f = 0; f < b.formats.size(); ++f) {
        if (f == none || p.candidate[g]) groups[g].candidates.push_back({b.scores[g][f], b.costs[g][f]});
      }
    }
    double budget = double(b.total_weight_numel) * *s.effective_bits / 16.0;
    ASSIGN_OR_RETURN(SearchResult r, SolveExact(groups, budget));
    for (size_t g = 0; g < n; ++g) {
      // Non-candidates have NONE as their only choice.
      p.format[g] = p.candidate[g] ? static_cast<size_t>(r.choice[g]) : none;
    }
    p.search = r;
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
  if (p.num_quantized(b) == 0) {
    return absl::InternalError("the plan quantizes no group although the selection admits some");
  }
  return p;
}

std::string PlanFormatCounts(const Plan& p, const Baseline& b) {
  std::vector<size_t> count(b.formats.size(), 0);
  for (size_t g = 0; g < p.format.size(); ++g) ++count[p.format[g]];
  std::string out;
  for (size_t f = 0; f < b.formats.size(); ++f) {
    if (!IsQuantized(b.formats[f]) || count[f] == 0) continue;
    absl::StrAppend(&out, out.empty() ? "" : ", ", count[f], " ", FormatName(b.formats[f]));
  }
  return out.empty() ? "none" : out;
}

CoverageManifest CoverageOf(const Plan& p, const Baseline& b) {
  CoverageManifest m;
  for (size_t r : b.ranking) {
    (p.quantized(r, b) ? m.selected_layers : m.dropped_layers).push_back(b.groups[r].key);
  }
  return m;
}

}  // namespace autoquant
