// The plan of `autoquant sweep`: which schemes to submit, each with its
// selection, before any daemon is contacted (so `--dry-run` needs none).
//
// Points come from a coverage list (`--coverages 10,20` or `top10,top20` or
// `10%,20%`), an effective-bits list (`--effective-bits 5,5.5,6`: the points
// of a search over several formats) or from coverage manifests discovered in the seeds' layout:
//
//   DIR/<scheme>/layer-sensitivity/<scheme>_coverage_from_baseline.json
//
// (what every scheme directory autoquant writes holds too), or such files
// directly in DIR or DIR/layer-sensitivity. `--only top10,top50` then keeps
// the points whose name has one of the tokens as a component.
//
//   ASSIGN_OR_RETURN(auto points, CoveragePoints("top10,top50", "run-"));
//   ASSIGN_OR_RETURN(points, FilterOnly(std::move(points), "top10"));
//
// Torch-free and gRPC-free: coverage and manifest parsing are core's
// (core/quant/plan.h), so a sweep reads them exactly as `quantize` does.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/quant/plan.h"

namespace autoquant::cli {

struct SweepPoint {
  std::string scheme;  // the output directory's name under the daemon's models root
  std::optional<double> coverage;
  std::optional<CoverageManifest> manifest;
  std::optional<double> effective_bits;
  std::string source;  // the coverage as given, or the manifest's path
};

// One point per comma-separated item of `list`. A bare number is a
// percentage ("10" = top10), `topXX` and `XX%` are read by ParseCoverage.
// Scheme names are `<prefix>topXX` (XX the percentage, shortest form).
// InvalidArgument for an empty list, an item ParseCoverage refuses, or two
// items naming the same coverage.
absl::StatusOr<std::vector<SweepPoint>> CoveragePoints(absl::string_view list, absl::string_view prefix);

// One point per comma-separated item of `list`, each an effective-bits
// target in (0, 16) (ValidateSelection's range). Scheme names are
// `<prefix>bitsB` (B in its shortest form: bits5.5). InvalidArgument for an
// empty list, an item that is not a number in range, or a repeated target.
absl::StatusOr<std::vector<SweepPoint>> EffectiveBitsPoints(absl::string_view list, absl::string_view prefix);

// A coverage manifest file (seed format), read with ParseCoverageManifest.
// NotFound when unreadable, InvalidArgument when not a manifest.
absl::StatusOr<CoverageManifest> ReadCoverageManifest(const std::filesystem::path& path);

// Every `*_coverage_from_baseline.json` in the layout above, parsed with
// ParseCoverageManifest; the scheme is the file name before that suffix, plus
// `suffix`. Sorted by selected fraction, then name. NotFound when `dir` does not
// exist or holds no manifest; InvalidArgument for an unparsable manifest (its
// path named) or two manifests of one scheme.
absl::StatusOr<std::vector<SweepPoint>> DiscoverCoverageManifests(const std::filesystem::path& dir,
                                                                  absl::string_view suffix);

// The points whose scheme has one of the comma-separated tokens as a
// component (split at '_' and '-'), or equals it; a bare number N means
// topN. InvalidArgument naming every token that matched no point (a typo
// must not silently shrink a sweep) and for an empty list.
absl::StatusOr<std::vector<SweepPoint>> FilterOnly(std::vector<SweepPoint> points, absl::string_view only);

}  // namespace autoquant::cli
