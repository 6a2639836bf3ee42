#include "client/cli/remote/sweep_plan.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/util/status_macros.h"

namespace autoquant::cli {
namespace {

constexpr absl::string_view kManifestSuffix = "_coverage_from_baseline.json";

std::vector<std::string> Items(absl::string_view list) {
  std::vector<std::string> out;
  for (absl::string_view item : absl::StrSplit(list, ',')) {
    item = absl::StripAsciiWhitespace(item);
    if (!item.empty()) out.emplace_back(item);
  }
  return out;
}

bool IsBareNumber(absl::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789.") == absl::string_view::npos;
}

std::string PercentLabel(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "top%g", fraction * 100);
  return buf;
}

absl::StatusOr<SweepPoint> ReadManifest(const std::filesystem::path& path, absl::string_view suffix) {
  ASSIGN_OR_RETURN(CoverageManifest m, ReadCoverageManifest(path));
  const std::string name = path.filename().string();
  SweepPoint p;
  p.scheme = absl::StrCat(name.substr(0, name.size() - kManifestSuffix.size()), suffix);
  p.manifest = std::move(m);
  p.source = path.string();
  return p;
}

double SelectedFraction(const SweepPoint& p) {
  const size_t n = p.manifest->selected_layers.size() + p.manifest->dropped_layers.size();
  return n == 0 ? 0 : static_cast<double>(p.manifest->selected_layers.size()) / n;
}

}  // namespace

absl::StatusOr<CoverageManifest> ReadCoverageManifest(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot be read"));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not valid JSON"));
  return ParseCoverageManifest(j, path.string());
}

absl::StatusOr<std::vector<SweepPoint>> CoveragePoints(absl::string_view list, absl::string_view prefix) {
  const std::vector<std::string> items = Items(list);
  if (items.empty()) return absl::InvalidArgumentError("--coverages is empty: give e.g. 10,20,50 or top10,top50");
  std::vector<SweepPoint> points;
  std::set<std::string> seen;
  for (const std::string& item : items) {
    // A bare number in the list is a percentage (the seeds' habit). A bare fraction would be read
    // as a tiny percentage by mistake ("0.5,1" as 0.5 % and 1 %), so only whole numbers are bare.
    if (IsBareNumber(item) && item.find_first_not_of("0123456789") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--coverages item '", item,
                                                     "': bare numbers in this list are whole percentages (10,20,50); ",
                                                     "write a fraction as a percentage or topXX (0.5 -> 50 or top50)"));
    }
    ASSIGN_OR_RETURN(double c, ParseCoverage(IsBareNumber(item) ? item + "%" : item));
    SweepPoint p;
    p.scheme = absl::StrCat(prefix, PercentLabel(c));
    p.coverage = c;
    p.source = item;
    if (!seen.insert(p.scheme).second) {
      return absl::InvalidArgumentError(absl::StrCat("--coverages names ", PercentLabel(c), " twice"));
    }
    points.push_back(std::move(p));
  }
  return points;
}

absl::StatusOr<std::vector<SweepPoint>> EffectiveBitsPoints(absl::string_view list, absl::string_view prefix) {
  const std::vector<std::string> items = Items(list);
  if (items.empty()) return absl::InvalidArgumentError("--effective-bits is empty: give e.g. 5,5.5,6,7,8");
  std::vector<SweepPoint> points;
  std::set<std::string> seen;
  for (const std::string& item : items) {
    double bits = 0;
    if (!absl::SimpleAtod(item, &bits) || !IsBareNumber(item)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--effective-bits item '", item, "' is not a number: give average weight bits, e.g. 5.5"));
    }
    SchemeSelection selection;
    selection.effective_bits = bits;
    if (absl::Status st = ValidateSelection(selection); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--effective-bits item '", item, "': ", st.message()));
    }
    char label[32];
    std::snprintf(label, sizeof label, "bits%g", bits);
    SweepPoint p;
    p.scheme = absl::StrCat(prefix, label);
    p.effective_bits = bits;
    p.source = item;
    if (!seen.insert(p.scheme).second) {
      return absl::InvalidArgumentError(absl::StrCat("--effective-bits names ", label + 4, " twice"));
    }
    points.push_back(std::move(p));
  }
  return points;
}

absl::StatusOr<std::vector<SweepPoint>> DiscoverCoverageManifests(const std::filesystem::path& dir,
                                                                  absl::string_view suffix) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("--coverage-manifests ", dir.string(), " is not a directory"));
  }
  // The seeds' layout (DIR/<scheme>/layer-sensitivity/) and the two shallower places.
  std::vector<std::filesystem::path> folders = {dir, dir / "layer-sensitivity"};
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.is_directory(ec)) folders.push_back(entry.path() / "layer-sensitivity");
  }
  std::vector<SweepPoint> points;
  std::map<std::string, std::string> where;
  for (const auto& folder : folders) {
    if (!std::filesystem::is_directory(folder, ec)) continue;
    for (const auto& entry : std::filesystem::directory_iterator(folder, ec)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_regular_file(ec) || !absl::EndsWith(name, kManifestSuffix) ||
          name.size() == kManifestSuffix.size()) {
        continue;
      }
      ASSIGN_OR_RETURN(SweepPoint p, ReadManifest(entry.path(), suffix));
      auto [it, inserted] = where.emplace(p.scheme, p.source);
      if (!inserted) {
        return absl::InvalidArgumentError(
            absl::StrCat("two coverage manifests for scheme ", p.scheme, ": ", it->second, " and ", p.source));
      }
      points.push_back(std::move(p));
    }
  }
  if (points.empty()) {
    return absl::NotFoundError(absl::StrCat("no *", kManifestSuffix, " under ", dir.string(),
                                            " (looked in DIR, DIR/layer-sensitivity and DIR/*/layer-sensitivity)"));
  }
  std::sort(points.begin(), points.end(), [](const SweepPoint& a, const SweepPoint& b) {
    const double fa = SelectedFraction(a), fb = SelectedFraction(b);
    return fa != fb ? fa < fb : a.scheme < b.scheme;
  });
  return points;
}

absl::StatusOr<std::vector<SweepPoint>> FilterOnly(std::vector<SweepPoint> points, absl::string_view only) {
  std::vector<std::string> tokens = Items(only);
  if (tokens.empty()) return absl::InvalidArgumentError("--only is empty: give e.g. top10,top50");
  for (std::string& t : tokens) {
    t = absl::AsciiStrToLower(t);
    if (IsBareNumber(t)) t = "top" + t;
  }
  std::set<std::string> used;
  std::vector<SweepPoint> kept;
  for (SweepPoint& p : points) {
    const std::string name = absl::AsciiStrToLower(p.scheme);
    std::vector<std::string> parts = absl::StrSplit(name, absl::ByAnyChar("_-"));
    parts.push_back(name);
    bool keep = false;
    for (const std::string& t : tokens) {
      if (std::find(parts.begin(), parts.end(), t) != parts.end()) {
        used.insert(t);
        keep = true;
      }
    }
    if (keep) kept.push_back(std::move(p));
  }
  std::vector<std::string> unused;
  for (const std::string& t : tokens) {
    if (!used.count(t)) unused.push_back(t);
  }
  if (!unused.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--only ", absl::StrJoin(unused, ","), " matches no point"));
  }
  return kept;
}

}  // namespace autoquant::cli
