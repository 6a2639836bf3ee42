#include "core/quant/groups.h"

#include <fnmatch.h>

#include <map>
#include <string_view>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/model/qwen2_5_vl/architecture.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace {

// The grouping key (without ".quant_recipe"): a fused GEMM's shards share one; "#" keeps keys
// apart from module names.
std::string GroupName(const std::string& rel) {
  const std::string fused = qwen2_5_vl::FusedGemmOf(rel);
  return fused.empty() ? rel : fused + "#";
}

bool Matches(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

}  // namespace

absl::StatusOr<std::vector<QuantGroup>> BuildGroups(const std::vector<LinearDesc>& linears,
                                                    const GroupingOptions& options) {
  std::vector<bool> pattern_used(options.disabled_layers.size(), false);
  std::vector<QuantGroup> groups;
  std::map<std::string, size_t> by_name;
  // Per group, the patterns already in its disabled_by: thousands of patterns may each match every
  // member, and searching the list for each would be quadratic.
  std::vector<std::unordered_set<std::string_view>> disabled_by_seen;
  for (size_t i = 0; i < linears.size(); ++i) {
    const std::string& full = linears[i].name;
    const std::string rel = qwen2_5_vl::InnerName(full);
    std::vector<const std::string*> hits;
    for (size_t p = 0; p < options.disabled_layers.size(); ++p) {
      const std::string& pat = options.disabled_layers[p];
      if (Matches(pat, rel) || Matches(pat, full)) {
        pattern_used[p] = true;
        hits.push_back(&pat);
      }
    }
    if (qwen2_5_vl::IsVision(rel) && !options.include_vision) continue;
    std::string gname = GroupName(rel);
    auto [it, inserted] = by_name.emplace(gname, groups.size());
    if (inserted) {
      QuantGroup g;
      g.key = rel + ".quant_recipe";  // first member in model order
      groups.push_back(std::move(g));
      disabled_by_seen.emplace_back();
    }
    QuantGroup& g = groups[it->second];
    g.modules.push_back(full);
    g.linear_index.push_back(i);
    g.weight_numel += linears[i].weight_numel;
    for (const std::string* h : hits) {
      if (disabled_by_seen[it->second].insert(*h).second) g.disabled_by.push_back(*h);
    }
    g.disabled = !g.disabled_by.empty();
  }
  std::vector<std::string> unused;
  size_t unused_count = 0;
  for (size_t p = 0; p < pattern_used.size(); ++p) {
    if (pattern_used[p]) continue;
    // The message is stored with the job: name a few, count the rest.
    if (++unused_count <= 10) unused.push_back("'" + options.disabled_layers[p] + "'");
  }
  if (unused_count > unused.size()) unused.push_back(absl::StrCat("and ", unused_count - unused.size(), " more"));
  if (!unused.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("disabled_layers pattern(s) ", absl::StrJoin(unused, ", "),
                     " match no Linear module; patterns are fnmatch wildcards on module names such as "
                     "'language_model.layers.0.mlp.down_proj' (e.g. '*layers.0.*' or '*down_proj')"));
  }
  if (groups.empty()) return absl::InvalidArgumentError("the model has no quantizable Linear layers");
  return groups;
}

absl::StatusOr<std::vector<QuantGroup>> QuantizableGroups(const std::vector<LinearDesc>& linears, bool include_vision,
                                                          bool tied_head) {
  ASSIGN_OR_RETURN(std::vector<QuantGroup> groups, BuildGroups(linears, {.include_vision = include_vision}));
  std::vector<QuantGroup> out;
  for (auto& g : groups) {
    if (tied_head && qwen2_5_vl::SiteOf(g.modules.front()).part == qwen2_5_vl::Part::kHead) continue;
    out.push_back(std::move(g));
  }
  return out;
}

absl::Status CheckFormatsFit(const std::vector<Format>& formats, const std::vector<LinearDesc>& linears,
                             const std::vector<QuantGroup>& groups) {
  for (const QuantGroup& g : groups) {
    for (size_t li : g.linear_index) {
      const LinearDesc& l = linears[li];
      const bool vision = qwen2_5_vl::IsVision(l.name);
      for (Format f : formats) {
        if (FormatFits(f, l.in_features, vision)) continue;
        if (vision && !SpecOf(f).vision) {
          return absl::FailedPreconditionError(
              absl::StrCat(FormatName(f), " does not quantize the vision tower (", l.name,
                           "): drop include_vision (--include-vision), or search a format that does (FP8) on its own"));
        }
        return absl::FailedPreconditionError(absl::StrCat(FormatName(f), " needs in_features to be a multiple of ",
                                                          SpecOf(f).block_size, ", and ", l.name, " has ",
                                                          l.in_features, ": search this model without it"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace autoquant
