#include "core/scheme/scheme_diff.h"

#include <torch/torch.h>

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/io/checkpoint.h"
#include "core/quant/fp8.h"
#include "core/scheme/export.h"
#include "core/scheme/manifests.h"
#include "core/util/hash.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace fs = std::filesystem;

bool SchemeDiffReport::ok() const {
  for (const auto& c : checks) {
    if (!c.ok()) return false;
  }
  for (const auto& p : pairs) {
    if (p.identical) return false;
  }
  return true;
}

nlohmann::ordered_json SchemeDiffReport::ToJson() const {
  nlohmann::ordered_json j;
  j["schemes"] = schemes;
  j["pairs"] = nlohmann::ordered_json::array();
  for (const auto& p : pairs) {
    j["pairs"].push_back({{"a", p.a},
                          {"b", p.b},
                          {"groups_differ", p.groups_differ},
                          {"max_abs_diff", p.max_abs_diff},
                          {"max_abs_diff_tensor", p.max_abs_diff_tensor},
                          {"identical", p.identical}});
  }
  j["self_check"] = nlohmann::ordered_json::array();
  for (const auto& c : checks)
    j["self_check"].push_back({{"scheme", c.scheme}, {"ok", c.ok()}, {"problems", c.problems}});
  j["ok"] = ok();
  return j;
}

std::string SchemeDiffReport::ToText() const {
  std::string out;
  for (const auto& c : checks) {
    absl::StrAppend(&out, c.ok() ? "ok       " : "MISMATCH ", c.scheme, " agrees with its manifest",
                    c.ok() ? "" : ": NO", "\n");
    for (const auto& p : c.problems) absl::StrAppend(&out, "           ", p, "\n");
  }
  for (const auto& p : pairs) {
    absl::StrAppendFormat(&out, "%s %s vs %s: %d groups differ in format, max |dw| %.6g%s\n",
                          p.identical ? "IDENTICAL" : "differ   ", p.a, p.b, p.groups_differ.size(), p.max_abs_diff,
                          p.max_abs_diff_tensor.empty() ? "" : " (" + p.max_abs_diff_tensor + ")");
  }
  absl::StrAppend(&out, ok() ? "OK: every scheme is distinct and matches its manifest\n"
                             : "FAILED: identical schemes or a scheme that disagrees with its manifest\n");
  return out;
}

namespace {

struct Scheme {
  std::string name;
  Checkpoint ckpt;
  SchemeManifest manifest;
  std::map<std::string, std::string> hashes;  // tensor -> SHA-256 of bytes
  std::vector<std::string> weights;           // checkpoint names of group members' weights
};

absl::StatusOr<torch::Tensor> DequantizedWeight(const Checkpoint& c, const std::string& weight) {
  ASSIGN_OR_RETURN(torch::Tensor w, c.Get(weight));
  if (w.scalar_type() != torch::kFloat8_e4m3fn) return TorchCall([&] { return w.to(torch::kFloat32); });
  std::string m = weight.substr(0, weight.size() - 7);
  ASSIGN_OR_RETURN(torch::Tensor s, c.Get(m + ".weight_scale"));
  return TorchCall([&] { return DequantizeFp8(w, s.to(torch::kFloat32).reshape({})); });
}

absl::Status ReadSchemeForDiff(const fs::path& dir, Scheme* s) {
  s->name = dir.filename().string();
  if (s->name.empty()) s->name = dir.parent_path().filename().string();
  ASSIGN_OR_RETURN(s->ckpt, Checkpoint::Open(dir));
  ASSIGN_OR_RETURN(s->manifest, ReadSchemeManifest(dir));
  for (const auto& f : s->ckpt.files()) {
    for (const auto& t : f->tensors()) {
      torch::Tensor v = f->Get(t);
      if (v.numel() == 0) {
        s->hashes[t.name] = "";
        continue;
      }
      ASSIGN_OR_RETURN(s->hashes[t.name],
                       Sha256Hex(absl::string_view(static_cast<const char*>(v.data_ptr()), t.nbytes())));
    }
  }
  return absl::OkStatus();
}

SchemeCheck SelfCheck(Scheme& s) {
  SchemeCheck c;
  c.scheme = s.name;
  for (const auto& [key, g] : s.manifest.groups) {
    const bool want_fp8 = IsQuantized(g.format);
    for (const auto& module : g.modules) {
      auto name = CheckpointModuleName(s.ckpt, module);
      if (!name.ok()) {
        c.problems.push_back(std::string(name.status().message()));
        continue;
      }
      s.weights.push_back(*name + ".weight");
      const TensorInfo* w = s.ckpt.Find(*name + ".weight");
      const bool is_fp8 = w->dtype == DType::kF8E4M3;
      if (is_fp8 != want_fp8) {
        c.problems.push_back(absl::StrCat(key, ": manifest says ", FormatName(g.format), " but ", *name, ".weight is ",
                                          DTypeName(w->dtype)));
      }
      const bool has_scales = s.ckpt.Find(*name + ".weight_scale") && s.ckpt.Find(*name + ".input_scale");
      if (is_fp8 && !has_scales)
        c.problems.push_back(absl::StrCat(*name, " is FP8 but lacks weight_scale/input_scale"));
      if (!is_fp8 && s.ckpt.Find(*name + ".weight_scale")) {
        c.problems.push_back(absl::StrCat(*name, " is not FP8 but carries a weight_scale"));
      }
    }
  }
  return c;
}

}  // namespace

absl::StatusOr<SchemeDiffReport> DiffSchemes(const std::vector<fs::path>& dirs) {
  std::vector<Scheme> schemes(dirs.size());
  SchemeDiffReport r;
  for (size_t i = 0; i < dirs.size(); ++i) {
    RETURN_IF_ERROR(ReadSchemeForDiff(dirs[i], &schemes[i]));
    r.schemes.push_back(schemes[i].name);
    r.checks.push_back(SelfCheck(schemes[i]));
  }
  for (size_t i = 0; i < schemes.size(); ++i) {
    for (size_t j = i + 1; j < schemes.size(); ++j) {
      const Scheme& a = schemes[i];
      const Scheme& b = schemes[j];
      PairDiff p;
      p.a = a.name;
      p.b = b.name;
      p.identical = a.hashes == b.hashes;
      for (const auto& [key, ga] : a.manifest.groups) {
        auto gb = b.manifest.groups.find(key);
        if (gb == b.manifest.groups.end() || gb->second.format != ga.format) p.groups_differ.push_back(key);
      }
      for (const auto& w : a.weights) {
        auto ha = a.hashes.find(w);
        auto hb = b.hashes.find(w);
        if (hb == b.hashes.end() || ha->second == hb->second) continue;  // same bytes: |dw| = 0
        ASSIGN_OR_RETURN(torch::Tensor wa, DequantizedWeight(a.ckpt, w));
        ASSIGN_OR_RETURN(torch::Tensor wb, DequantizedWeight(b.ckpt, w));
        ASSIGN_OR_RETURN(double d, TorchCall([&] { return (wa - wb).abs().max().item<double>(); }, w));
        if (d > p.max_abs_diff) {
          p.max_abs_diff = d;
          p.max_abs_diff_tensor = w;
        }
      }
      r.pairs.push_back(std::move(p));
    }
  }
  return r;
}

}  // namespace autoquant
