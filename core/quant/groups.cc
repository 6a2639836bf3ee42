#include "core/quant/groups.h"

#include <fnmatch.h>

#include <map>
#include <regex>
#include <string_view>
#include <unordered_set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace {

// Returns the grouping key (without ".quant_recipe") ModelOpt's rules give, in their order:
// q/k/v, then all experts of a layer, then gate/up. "#" keeps keys apart from module names.
std::string GroupName(const std::string& rel) {
  static const std::regex kExperts(R"(^(.*?\.mlp\.experts)\.\d+\.(gate_proj|up_proj|down_proj)$)");
  const std::string fused = FusedGemmName(rel);
  if (absl::EndsWith(fused, ".qkv_proj")) return fused + "#";
  std::smatch m;
  if (std::regex_match(rel, m, kExperts)) return m[1].str() + "#experts";
  return fused.empty() ? rel : fused + "#";
}

bool Matches(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

bool IsVision(const std::string& rel) { return absl::StartsWith(rel, "visual."); }

}  // namespace

std::string FusedGemmName(const std::string& module) {
  const size_t dot = module.rfind('.');
  if (dot == std::string::npos) return "";
  const std::string leaf = module.substr(dot + 1), parent = module.substr(0, dot);
  if (leaf == "q_proj" || leaf == "k_proj" || leaf == "v_proj") return parent + ".qkv_proj";
  if (leaf == "gate_proj" || leaf == "up_proj") return parent + ".gate_up_proj";
  return "";
}

std::string RelativeModuleName(const std::string& full_name) {
  if (absl::StartsWith(full_name, "model.")) return full_name.substr(6);
  return full_name;
}

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
    const std::string rel = RelativeModuleName(full);
    std::vector<const std::string*> hits;
    for (size_t p = 0; p < options.disabled_layers.size(); ++p) {
      const std::string& pat = options.disabled_layers[p];
      if (Matches(pat, rel) || Matches(pat, full)) {
        pattern_used[p] = true;
        hits.push_back(&pat);
      }
    }
    if (IsVision(rel) && !options.include_vision) continue;
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
    if (tied_head && g.key == "lm_head.quant_recipe") continue;
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace autoquant
