#include "core/quant/groups.h"

#include <fnmatch.h>

#include <map>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace autoquant {
namespace {

// Returns the grouping key (without ".quant_recipe") ModelOpt's rules give.
std::string GroupName(const std::string& rel) {
  static const std::regex kQkv(R"(^(.*?)\.(q_proj|k_proj|v_proj)$)");
  static const std::regex kExperts(R"(^(.*?\.mlp\.experts)\.\d+\.(gate_proj|up_proj|down_proj)$)");
  static const std::regex kGateUp(R"(^(.*?)\.(gate_proj|up_proj)$)");
  std::smatch m;
  for (const std::regex* r : {&kQkv, &kExperts, &kGateUp}) {
    if (std::regex_match(rel, m, *r)) return m[1].str() + "#" + std::to_string(r == &kQkv ? 0 : r == &kExperts ? 1 : 2);
  }
  return rel;
}

bool Matches(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

bool IsVision(const std::string& rel) { return absl::StartsWith(rel, "visual."); }

}  // namespace

std::string RelativeModuleName(const std::string& full_name) {
  if (absl::StartsWith(full_name, "model.")) return full_name.substr(6);
  return full_name;
}

absl::StatusOr<std::vector<QuantGroup>> BuildGroups(const std::vector<LinearDesc>& linears,
                                                    const GroupingOptions& options) {
  std::vector<bool> pattern_used(options.disabled_layers.size(), false);
  std::vector<QuantGroup> groups;
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < linears.size(); ++i) {
    const std::string& full = linears[i].name;
    const std::string rel = RelativeModuleName(full);
    std::vector<std::string> hits;
    for (size_t p = 0; p < options.disabled_layers.size(); ++p) {
      const std::string& pat = options.disabled_layers[p];
      if (Matches(pat, rel) || Matches(pat, full)) {
        pattern_used[p] = true;
        hits.push_back(pat);
      }
    }
    if (IsVision(rel) && !options.include_vision) continue;
    std::string gname = GroupName(rel);
    auto [it, inserted] = by_name.emplace(gname, groups.size());
    if (inserted) {
      QuantGroup g;
      g.key = rel + ".quant_recipe";  // first member in model order
      groups.push_back(std::move(g));
    }
    QuantGroup& g = groups[it->second];
    g.modules.push_back(full);
    g.linear_index.push_back(i);
    g.weight_numel += linears[i].weight_numel;
    for (auto& h : hits) {
      if (std::find(g.disabled_by.begin(), g.disabled_by.end(), h) == g.disabled_by.end()) {
        g.disabled_by.push_back(h);
      }
    }
    g.disabled = !g.disabled_by.empty();
  }
  std::vector<std::string> unused;
  for (size_t p = 0; p < pattern_used.size(); ++p) {
    if (!pattern_used[p]) unused.push_back("'" + options.disabled_layers[p] + "'");
  }
  if (!unused.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "disabled_layers pattern(s) ", absl::StrJoin(unused, ", "),
        " match no Linear module; patterns are fnmatch wildcards on module names such as "
        "'language_model.layers.0.mlp.down_proj' (e.g. '*layers.0.*' or '*down_proj')"));
  }
  if (groups.empty()) return absl::InvalidArgumentError("the model has no quantizable Linear layers");
  return groups;
}

}  // namespace autoquant
