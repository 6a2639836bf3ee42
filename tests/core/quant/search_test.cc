#include "core/quant/search.h"

#include <random>

#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;

// Enumerates every combination: the reference the exact search must equal.
// `slack`: how far over the budget a total may be (SolveExact's tolerance).
double BruteForce(const std::vector<SearchGroup>& groups, double budget, bool* feasible, double slack = 1e-9) {
  double best = 1e300;
  *feasible = false;
  std::vector<int> idx(groups.size(), 0);
  while (true) {
    double cost = 0, score = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      cost += groups[g].candidates[idx[g]].cost;
      score += groups[g].candidates[idx[g]].score;
    }
    if (cost <= budget + slack) {
      *feasible = true;
      best = std::min(best, score);
    }
    size_t g = 0;
    while (g < groups.size() && ++idx[g] == static_cast<int>(groups[g].candidates.size())) idx[g++] = 0;
    if (g == groups.size()) break;
  }
  return best;
}

TEST(SolveExactTest, EqualsBruteForceOnRandomInstances) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> ngroups(1, 10), ncand(1, 3), numel(1, 8);
  std::uniform_real_distribution<double> score(0, 10), frac(0.3, 1.05);
  int feasible_seen = 0, infeasible_seen = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<SearchGroup> groups(ngroups(rng));
    double total = 0;
    for (auto& g : groups) {
      int n = numel(rng) * 1024;
      int k = ncand(rng);
      // Formats as in AutoQuant: bits 4, 8, 16 with 16 ("none") scoring 0.
      const int bits[] = {4, 8, 16};
      double prev = 1e9;
      for (int c = 3 - k; c < 3; ++c) {
        double s = bits[c] == 16 ? 0 : std::min(prev, score(rng));
        prev = s;
        g.candidates.push_back({s, n * bits[c] / 16.0});
      }
      total += n;
    }
    double budget = total * frac(rng);
    bool feasible;
    double want = BruteForce(groups, budget, &feasible);
    auto got = SolveExact(groups, budget);
    if (!feasible) {
      ++infeasible_seen;
      EXPECT_EQ(got.status().code(), absl::StatusCode::kOutOfRange) << trial;
      continue;
    }
    ++feasible_seen;
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_NEAR(got->score, want, 1e-9) << trial;
    EXPECT_LE(got->cost, budget + 1e-9);
    double cost = 0, s = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      cost += groups[g].candidates[got->choice[g]].cost;
      s += groups[g].candidates[got->choice[g]].score;
    }
    EXPECT_DOUBLE_EQ(cost, got->cost);
    EXPECT_DOUBLE_EQ(s, got->score);
  }
  EXPECT_GT(feasible_seen, 100);
  EXPECT_GT(infeasible_seen, 5);
}

TEST(SolveExactTest, InfeasibleBudgetStatesTheMinimum) {
  std::vector<SearchGroup> groups = {{{{5, 50}, {0, 100}}}, {{{3, 25}, {0, 50}}}};
  auto r = SolveExact(groups, 70);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(r.status().message(), HasSubstr("minimum achievable cost 75"));
}

TEST(SolveExactTest, PrefersTheCheaperChoiceOnEqualScore) {
  // Quantizing costs nothing in score here: the tie goes to the lower cost.
  std::vector<SearchGroup> groups = {{{{0, 50}, {0, 100}}}};
  ASSERT_OK_AND_ASSIGN(auto r, SolveExact(groups, 100));
  EXPECT_EQ(r.choice[0], 0);
}

// Costs a hair apart (below the 1e-9 relative tolerance SolveExact allows
// over the budget) are still different costs: the cheaper state must survive,
// since a later group may need exactly that hair to stay within budget.
TEST(SolveExactTest, KeepsACheaperStateThatIsOnlyAHairCheaper) {
  const double hair = 0.8e-9;
  std::vector<SearchGroup> groups = {
      {{{3, 1.0}, {2, 1.0 + hair}}},
      {{{0, 1.0 + 1.5e-9}, {100, 0}}},
  };
  // 1.0 + (1.0 + 1.5e-9) fits in 2.0 with the tolerance (2e-9); 1.0 + hair + ... does not.
  ASSERT_OK_AND_ASSIGN(auto r, SolveExact(groups, 2.0));
  EXPECT_EQ(r.choice, (std::vector<int>{0, 0}));
  EXPECT_EQ(r.score, 3);
}

// Candidates whose costs form chains of steps below the old comparison
// tolerance (a ~ b, b ~ c, a < c): a tolerant comparator is not a strict weak
// ordering, so sorting the frontier with it was undefined behaviour and
// dropped states. Many groups make the merged lists long enough for
// std::sort's quicksort phase, not just its insertion sort.
TEST(SolveExactTest, EqualsBruteForceWhenCostsDifferByLessThanTheTolerance) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> ngroups(2, 9), ncand(2, 4), step(0, 3);
  std::uniform_real_distribution<double> score(0, 10), frac(0.95, 1.05);
  int mismatches = 0, feasible_seen = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<SearchGroup> groups(ngroups(rng));
    double total = 0;
    for (auto& g : groups) {
      const int k = ncand(rng);
      for (int c = 0; c < k; ++c) g.candidates.push_back({score(rng), 1.0 + step(rng) * 0.4e-9});
      total += 1.0;
    }
    // Budgets around the total, so that the hairs decide what fits.
    const double budget = total + (frac(rng) - 1.0) * 1e-8;
    const double slack = 1e-9 * std::max(1.0, std::abs(budget));
    bool feasible;
    double want = BruteForce(groups, budget, &feasible, slack);
    auto got = SolveExact(groups, budget);
    if (!feasible) {
      EXPECT_EQ(got.status().code(), absl::StatusCode::kOutOfRange) << trial;
      continue;
    }
    ++feasible_seen;
    ASSERT_TRUE(got.ok()) << trial << ": " << got.status();
    if (std::abs(got->score - want) > 1e-9) ++mismatches;
    EXPECT_NEAR(got->score, want, 1e-9) << trial;
    EXPECT_LE(got->cost, budget + slack) << trial;
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_GT(feasible_seen, 50);
}

TEST(SolveExactTest, ScalesToAThreeBillionParameterModel) {
  // 36 layers x (qkv, o, gate/up, down) + lm_head with Qwen2.5-VL-3B shapes.
  std::vector<SearchGroup> groups;
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> score(0, 1);
  double total = 0;
  for (int l = 0; l < 36; ++l) {
    for (double n : {2048.0 * 2560, 2048.0 * 2048, 2.0 * 11008 * 2048, 11008.0 * 2048}) {
      groups.push_back({{{score(rng), n / 2}, {0, n}}});
      total += n;
    }
  }
  groups.push_back({{{score(rng), 151936.0 * 2048 / 2}, {0, 151936.0 * 2048}}});
  total += 151936.0 * 2048;
  ASSERT_OK_AND_ASSIGN(auto r, SolveExact(groups, total * 10.0 / 16));
  EXPECT_LE(r.cost, total * 10.0 / 16);
  EXPECT_GT(r.cost, total * 9.5 / 16);  // the budget is used: fewer quantized groups score less
}

}  // namespace
}  // namespace autoquant
