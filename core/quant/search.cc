#include "core/quant/search.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace autoquant {
namespace {

struct State {
  double cost;
  double score;
  int32_t parent;  // index into the previous layer's frontier
  int32_t choice;  // candidate of this group
};

// A sum that lands a rounding error above the budget still fits. Only the
// budget test has a tolerance: the frontier is ordered by exact costs, since
// a tolerant "less" is no strict weak ordering (a ~ b and b ~ c but a < c),
// which makes std::sort undefined, and treating near-equal costs as equal lets
// a state crowd out a cheaper one that a later group needs to stay in budget.
// Real costs (numel x bits / 16) are multiples of 1/16, whose sums doubles
// hold exactly, so exact ordering splits nothing there.
bool OverBudget(double cost, double budget) { return cost > budget + 1e-9 * std::max(1.0, std::abs(budget)); }

}  // namespace

absl::StatusOr<SearchResult> SolveExact(const std::vector<SearchGroup>& groups, double budget, int64_t max_states) {
  double min_total = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (groups[g].candidates.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("search group ", g, " has no candidates"));
    }
    double min_cost = std::numeric_limits<double>::infinity();
    for (const auto& c : groups[g].candidates) {
      if (!(c.cost >= 0) || !(c.score >= 0) || !std::isfinite(c.cost) || !std::isfinite(c.score)) {
        return absl::InvalidArgumentError(
            absl::StrCat("search group ", g, " has a negative or non-finite score or cost"));
      }
      min_cost = std::min(min_cost, c.cost);
    }
    min_total += min_cost;
  }
  if (OverBudget(min_total, budget)) {
    return absl::OutOfRangeError(absl::StrFormat(
        "constraint infeasible: budget %.6g is below the minimum achievable cost %.6g", budget, min_total));
  }

  // frontiers[g] = Pareto frontier after deciding groups 0..g, sorted by cost
  // ascending with strictly decreasing score.
  std::vector<std::vector<State>> frontiers;
  frontiers.reserve(groups.size() + 1);
  frontiers.push_back({State{0.0, 0.0, -1, -1}});
  int64_t peak = 1;
  std::vector<State> merged;
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& prev = frontiers.back();
    merged.clear();
    for (int32_t p = 0; p < static_cast<int32_t>(prev.size()); ++p) {
      for (int32_t c = 0; c < static_cast<int32_t>(groups[g].candidates.size()); ++c) {
        const auto& cand = groups[g].candidates[c];
        double cost = prev[p].cost + cand.cost;
        if (OverBudget(cost, budget)) continue;
        merged.push_back(State{cost, prev[p].score + cand.score, p, c});
      }
    }
    // Costs and scores are finite (checked above), so this is a strict weak
    // ordering; the parent makes it total, so the result never depends on
    // the sort's handling of equal elements.
    std::sort(merged.begin(), merged.end(), [](const State& a, const State& b) {
      if (a.cost != b.cost) return a.cost < b.cost;
      if (a.score != b.score) return a.score < b.score;
      if (a.choice != b.choice) return a.choice < b.choice;
      return a.parent < b.parent;
    });
    std::vector<State> next;
    for (const State& s : merged) {
      // Keep s only if it strictly improves the score over every cheaper state.
      if (next.empty() || s.score < next.back().score) next.push_back(s);
    }
    peak = std::max<int64_t>(peak, static_cast<int64_t>(next.size()));
    if (peak > max_states) {
      return absl::ResourceExhaustedError(
          absl::StrCat("exact search frontier exceeded ", max_states, " states at group ", g, " of ", groups.size()));
    }
    frontiers.push_back(std::move(next));
  }

  // The last frontier's minimum score is its last entry (scores decrease with cost).
  const auto& last = frontiers.back();
  int32_t idx = static_cast<int32_t>(last.size()) - 1;
  SearchResult result;
  result.score = last[idx].score;
  result.cost = last[idx].cost;
  result.frontier_peak = peak;
  result.choice.assign(groups.size(), -1);
  for (size_t g = groups.size(); g > 0; --g) {
    const State& s = frontiers[g][idx];
    result.choice[g - 1] = s.choice;
    idx = s.parent;
  }
  return result;
}

}  // namespace autoquant
