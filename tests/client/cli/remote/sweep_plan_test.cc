#include "client/cli/remote/sweep_plan.h"

#include <fstream>

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace autoquant::cli {
namespace {

namespace fs = std::filesystem;

SweepPoint Named(const std::string& scheme) {
  SweepPoint p;
  p.scheme = scheme;
  return p;
}

std::vector<std::string> Schemes(const std::vector<SweepPoint>& points) {
  std::vector<std::string> out;
  for (const auto& p : points) out.push_back(p.scheme);
  return out;
}

// DIR/<scheme>/layer-sensitivity/<scheme>_coverage_from_baseline.json, as the seeds laid them out.
void WriteSeedManifest(const fs::path& dir, const std::string& scheme, int selected, int dropped,
                       const std::string& extra = "") {
  const fs::path folder = dir / scheme / "layer-sensitivity";
  fs::create_directories(folder);
  nlohmann::json j = {{"selected_layers", nlohmann::json::array()}, {"dropped_layers", nlohmann::json::array()}};
  for (int i = 0; i < selected + dropped; ++i) {
    j[i < selected ? "selected_layers" : "dropped_layers"].push_back("language_model.layers." + std::to_string(i) +
                                                                     ".mlp.gate_proj.quant_recipe");
  }
  j["coverage_fraction"] = static_cast<double>(selected) / (selected + dropped);  // seeds carry more fields
  std::ofstream(folder / (scheme + "_coverage_from_baseline.json")) << (extra.empty() ? j.dump() : extra);
}

TEST(CoveragePointsTest, BareNumbersArePercentagesAndNamesAreTopXX) {
  auto points = CoveragePoints("10, top50,100%,top12.5", "run-");
  ASSERT_TRUE(points.ok()) << points.status();
  EXPECT_EQ(Schemes(*points), (std::vector<std::string>{"run-top10", "run-top50", "run-top100", "run-top12.5"}));
  EXPECT_DOUBLE_EQ(*(*points)[0].coverage, 0.10);
  EXPECT_DOUBLE_EQ(*(*points)[1].coverage, 0.50);
  EXPECT_DOUBLE_EQ(*(*points)[2].coverage, 1.0);
  EXPECT_DOUBLE_EQ(*(*points)[3].coverage, 0.125);
  EXPECT_EQ((*points)[0].source, "10");
}

TEST(CoveragePointsTest, RefusesWhatParseCoverageRefusesEmptyListsAndRepeats) {
  for (const char* bad : {"", " , ", "0", "101", "top0", "ten", "10,top10", "nan", "10%%"}) {
    auto points = CoveragePoints(bad, "");
    EXPECT_EQ(points.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(CoveragePoints("10,top10", "").status().message().find("twice"), std::string::npos);
}

// "0.5,1" must not quietly mean 0.5 % and 1 %: bare numbers in the list are whole percentages.
TEST(CoveragePointsTest, ABareFractionIsRefusedNotReadAsATinyPercentage) {
  for (const char* bad : {"0.5", "10,0.5", "12.5", "1.0"}) {
    auto points = CoveragePoints(bad, "");
    EXPECT_EQ(points.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(points.status().message().find("whole percentages"), std::string::npos) << bad;
  }
}

TEST(DiscoverCoverageManifestsTest, FindsTheSeedsLayoutSortedByCoverage) {
  const fs::path dir = autoquant::testing::TempDir();
  WriteSeedManifest(dir, "fp8_autoquant_all_layers_top100_coco2017", 10, 0);
  WriteSeedManifest(dir, "fp8_autoquant_all_layers_top10_coco2017", 1, 9);
  WriteSeedManifest(dir, "fp8_autoquant_all_layers_top50_coco2017", 5, 5);
  // Not manifests: another file in layer-sensitivity, a baseline's quant manifest, a scheme without
  // one.
  std::ofstream(dir / "fp8_autoquant_all_layers_top10_coco2017" / "layer-sensitivity" / "per-layer-sensitivity.md")
      << "#";
  std::ofstream(dir / "fp8_autoquant_all_layers_top10_coco2017" / "layer-sensitivity" / "x_quant_manifest.json")
      << "{}";
  fs::create_directories(dir / "fp8_autoquant_all_layers_fp8_coco2017" / "layer-sensitivity");
  auto points = DiscoverCoverageManifests(dir, "_v2");
  ASSERT_TRUE(points.ok()) << points.status();
  EXPECT_EQ(Schemes(*points), (std::vector<std::string>{"fp8_autoquant_all_layers_top10_coco2017_v2",
                                                        "fp8_autoquant_all_layers_top50_coco2017_v2",
                                                        "fp8_autoquant_all_layers_top100_coco2017_v2"}));
  EXPECT_EQ((*points)[0].manifest->selected_layers.size(), 1u);
  EXPECT_EQ((*points)[0].manifest->dropped_layers.size(), 9u);
  EXPECT_FALSE((*points)[0].coverage.has_value());
}

TEST(DiscoverCoverageManifestsTest, AlsoReadsAOneSchemeDirectoryAndAFlatDirectory) {
  const fs::path dir = autoquant::testing::TempDir();
  WriteSeedManifest(dir, "top20", 2, 8);
  auto one = DiscoverCoverageManifests(dir / "top20", "");  // DIR/layer-sensitivity/
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(Schemes(*one), std::vector<std::string>{"top20"});
  auto flat = DiscoverCoverageManifests(dir / "top20" / "layer-sensitivity", "");
  ASSERT_TRUE(flat.ok()) << flat.status();
  EXPECT_EQ(Schemes(*flat), std::vector<std::string>{"top20"});
}

TEST(DiscoverCoverageManifestsTest, MissingEmptyOrBrokenIsAnErrorNamingThePlace) {
  const fs::path dir = autoquant::testing::TempDir();
  EXPECT_EQ(DiscoverCoverageManifests(dir / "nope", "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(DiscoverCoverageManifests(dir, "").status().code(), absl::StatusCode::kNotFound);
  WriteSeedManifest(dir, "broken", 0, 0, "{\"selected_layers\": [1]}");
  auto s = DiscoverCoverageManifests(dir, "").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("broken_coverage_from_baseline.json"), std::string::npos) << s;
  WriteSeedManifest(dir, "broken", 0, 0, "not json");
  EXPECT_EQ(DiscoverCoverageManifests(dir, "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DiscoverCoverageManifestsTest, KeepsDisabledLayers) {
  const fs::path dir = autoquant::testing::TempDir();
  WriteSeedManifest(dir, "s", 0, 0,
                    R"({"selected_layers": ["a"], "dropped_layers": [], "disabled_layers": ["*visual*"]})");
  auto points = DiscoverCoverageManifests(dir, "");
  ASSERT_TRUE(points.ok()) << points.status();
  EXPECT_EQ((*points)[0].manifest->disabled_layers, std::vector<std::string>{"*visual*"});
}

TEST(FilterOnlyTest, MatchesWholeComponentsNotPrefixes) {
  std::vector<SweepPoint> points;
  for (const char* s : {"fp8_top10_coco", "fp8_top100_coco", "fp8_top50_coco", "top20"}) points.push_back(Named(s));
  auto kept = FilterOnly(points, "top10,50,top20");
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(Schemes(*kept), (std::vector<std::string>{"fp8_top10_coco", "fp8_top50_coco", "top20"}));
}

TEST(FilterOnlyTest, ATokenMatchingNothingIsAnError) {
  std::vector<SweepPoint> points = {Named("top10"), Named("top50")};
  auto kept = FilterOnly(points, "top10,top15");
  EXPECT_EQ(kept.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(kept.status().message().find("top15"), std::string::npos);
  EXPECT_EQ(FilterOnly(points, ",").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EffectiveBitsPointsTest, NamesAreBitsBAndTargetsAreChecked) {
  ASSERT_OK_AND_ASSIGN(auto points, EffectiveBitsPoints("5, 5.5,6,8", "mix-"));
  ASSERT_EQ(points.size(), 4u);
  EXPECT_EQ(points[0].scheme, "mix-bits5");
  EXPECT_EQ(points[1].scheme, "mix-bits5.5");
  EXPECT_EQ(*points[1].effective_bits, 5.5);
  EXPECT_FALSE(points[1].coverage.has_value());
  for (const char* bad : {"", "5,5", "16", "0", "-1", "five", "5,nan"}) {
    auto r = EffectiveBitsPoints(bad, "");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace autoquant::cli
