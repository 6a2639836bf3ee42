// Exact search for the per-group format choice (multiple-choice knapsack).
//
// Each group has one candidate per format with a sensitivity score and a
// cost; pick exactly one candidate per group to minimize the total score
// subject to total cost <= budget. ModelOpt solves this as an ILP with CBC and
// retries with artificial lower bounds when the solver fails; we solve it
// exactly with a Pareto-frontier dynamic program (Nemhauser–Ullmann): after
// each group, keep only the (cost, score) states not dominated by another, and
// drop states over budget. The frontier is bounded by the number of distinct
// reachable costs, which is small because groups share a few shapes.
//
// Ties on score are broken towards lower cost, then towards the earlier
// candidate (most aggressive format first), so results are deterministic.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace autoquant {

struct SearchCandidate {
  double score = 0;  // >= 0; "none" scores 0
  double cost = 0;   // weight numel x bits / 16
};

struct SearchGroup {
  std::vector<SearchCandidate> candidates;  // at least one
};

struct SearchResult {
  std::vector<int> choice;  // per group, index into candidates
  double score = 0;
  double cost = 0;
  int64_t frontier_peak = 0;  // largest Pareto frontier seen (for diagnostics)
};

// InvalidArgument for an empty group or negative cost/score; OutOfRange when
// even the cheapest choice per group exceeds `budget` (the message states the
// minimum achievable cost); ResourceExhausted if the frontier outgrows
// `max_states` (never seen on real models; a clear failure beats a silent
// heuristic).
absl::StatusOr<SearchResult> SolveExact(const std::vector<SearchGroup>& groups, double budget,
                                        int64_t max_states = 20'000'000);

}  // namespace autoquant
