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
#include "core/scheme/nvfp4_storage.h"
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
  std::map<std::string, std::string> hashes;       // tensor -> SHA-256 of bytes
  std::map<std::string, StoredNvfp4Linear> nvfp4;  // checkpoint module -> its NVFP4 storage
  // Group members as stored: checkpoint module name and the format its tensors are in.
  std::vector<std::pair<std::string, Format>> modules;
};

// The format a module's tensors are stored in (what the checkpoint says, whatever the manifest claims).
Format StoredFormat(const Scheme& s, const std::string& module) {
  if (auto it = s.nvfp4.find(module); it != s.nvfp4.end()) return it->second.format();
  const TensorInfo* w = s.ckpt.Find(module + ".weight");
  return w != nullptr && w->dtype == DType::kF8E4M3 ? Format::kFp8 : Format::kNone;
}

// The module's weight as the stored values mean it, float32 [out, in].
absl::StatusOr<torch::Tensor> DequantizedWeight(const Scheme& s, const std::string& module, Format f) {
  if (f == Format::kNvfp4 || f == Format::kNvfp4W4A16) {
    return DequantizeStoredNvfp4(s.ckpt, s.nvfp4.at(module), torch::kCPU);
  }
  ASSIGN_OR_RETURN(torch::Tensor w, s.ckpt.Get(module + ".weight"));
  if (f == Format::kNone) return TorchCall([&] { return w.to(torch::kFloat32); });
  ASSIGN_OR_RETURN(torch::Tensor scale, s.ckpt.Get(module + ".weight_scale"));
  return TorchCall([&] { return DequantizeFp8(w, scale.to(torch::kFloat32).reshape({})); });
}

// The digests of every tensor of `module` ("<module>.*"), by suffix: equal maps mean equal stored bytes.
std::map<std::string, std::string> ModuleHashes(const Scheme& s, const std::string& module) {
  std::map<std::string, std::string> out;
  const std::string prefix = module + ".";
  for (auto it = s.hashes.lower_bound(prefix); it != s.hashes.end() && absl::StartsWith(it->first, prefix); ++it) {
    const std::string suffix = it->first.substr(prefix.size());
    if (suffix.find('.') == std::string::npos) out[suffix] = it->second;
  }
  return out;
}

absl::Status ReadSchemeForDiff(const fs::path& dir, Scheme* s) {
  s->name = dir.filename().string();
  if (s->name.empty()) s->name = dir.parent_path().filename().string();
  ASSIGN_OR_RETURN(s->ckpt, Checkpoint::Open(dir));
  ASSIGN_OR_RETURN(s->manifest, ReadSchemeManifest(dir));
  ASSIGN_OR_RETURN(s->nvfp4, ReadNvfp4Linears(s->ckpt));
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
    for (const auto& module : g.modules) {
      auto name = CheckpointModuleName(s.ckpt, module);
      if (!name.ok()) {
        c.problems.push_back(std::string(name.status().message()));
        continue;
      }
      const Format stored = StoredFormat(s, *name);
      s.modules.emplace_back(*name, stored);
      if (stored != g.format) {
        c.problems.push_back(absl::StrCat(key, ": manifest says ", FormatName(g.format), " but ", *name,
                                          " is stored as ", FormatName(stored)));
      }
      const bool has_scales = s.ckpt.Find(*name + ".weight_scale") && s.ckpt.Find(*name + ".input_scale");
      if (stored == Format::kFp8 && !has_scales)
        c.problems.push_back(absl::StrCat(*name, " is FP8 but lacks weight_scale/input_scale"));
      if (stored == Format::kNone && s.ckpt.Find(*name + ".weight_scale")) {
        c.problems.push_back(absl::StrCat(*name, " is not quantized but carries a weight_scale"));
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
      std::map<std::string, Format> in_b(b.modules.begin(), b.modules.end());
      for (const auto& [module, fa] : a.modules) {
        auto fb = in_b.find(module);
        // Weights and scales all the same bytes: |dw| = 0. Scales alone differing still changes the weight.
        if (fb == in_b.end() || ModuleHashes(a, module) == ModuleHashes(b, module)) continue;
        ASSIGN_OR_RETURN(torch::Tensor wa, DequantizedWeight(a, module, fa));
        ASSIGN_OR_RETURN(torch::Tensor wb, DequantizedWeight(b, module, fb->second));
        ASSIGN_OR_RETURN(double d, TorchCall([&] { return (wa - wb).abs().max().item<double>(); }, module));
        if (d > p.max_abs_diff) {
          p.max_abs_diff = d;
          p.max_abs_diff_tensor = module + ".weight";
        }
      }
      r.pairs.push_back(std::move(p));
    }
  }
  return r;
}

}  // namespace autoquant
