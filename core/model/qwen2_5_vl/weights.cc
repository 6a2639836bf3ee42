#include "core/model/qwen2_5_vl/weights.h"

#include <map>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/model/qwen2_5_vl/architecture.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace {

constexpr absl::string_view kLmHead = "lm_head.weight";

std::string ListNames(const std::vector<std::string>& names) {
  constexpr size_t kMax = 40;
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(names.size(), kMax));
  std::string s = absl::StrJoin(shown, ", ");
  if (names.size() > kMax) absl::StrAppend(&s, ", ... and ", names.size() - kMax, " more");
  return s;
}

std::string Shape(const std::vector<int64_t>& v) { return absl::StrCat("[", absl::StrJoin(v, ", "), "]"); }

// Expected canonical name -> checkpoint key, after verification.
absl::StatusOr<std::map<std::string, std::string>> MatchKeys(const Checkpoint& ckpt, Qwen2_5_VLModel& model,
                                                             const LoadHooks& hooks = {}) {
  const bool tied = model->config().tie_word_embeddings;
  std::map<std::string, torch::Tensor> expected;
  for (const auto& p : model->named_parameters()) {
    if (tied && p.key() == kLmHead) continue;
    expected.emplace(p.key(), p.value());
  }
  std::map<std::string, std::string> found;
  std::vector<std::string> unexpected, misshaped, missing;
  for (const std::string& key : ckpt.TensorNames()) {
    if (absl::EndsWith(key, ".inv_freq")) continue;
    if (hooks.skip_key && hooks.skip_key(key)) continue;
    std::optional<std::pair<std::string, std::vector<int64_t>>> stands =
        hooks.stands_for ? hooks.stands_for(key) : std::nullopt;
    const std::string canon = qwen2_5_vl::ModelName(stands ? stands->first : key);
    if (tied && canon == kLmHead) continue;
    auto it = expected.find(canon);
    if (it == expected.end()) {
      unexpected.push_back(key);
      continue;
    }
    if (!found.emplace(canon, key).second) {
      unexpected.push_back(absl::StrCat(key, " (duplicates ", found[canon], ")"));
      continue;
    }
    const TensorInfo* info = ckpt.Find(key);
    std::vector<int64_t> want(it->second.sizes().begin(), it->second.sizes().end());
    const std::vector<int64_t>& got = stands ? stands->second : info->shape;
    if (got != want) {
      misshaped.push_back(absl::StrCat(key, " (checkpoint ", Shape(got), ", model ", Shape(want), ")"));
    }
  }
  for (const auto& [name, t] : expected) {
    if (!found.count(name)) missing.push_back(name);
  }
  if (missing.empty() && unexpected.empty() && misshaped.empty()) return found;
  std::vector<std::string> parts;
  if (!missing.empty()) parts.push_back(absl::StrCat(missing.size(), " missing: ", ListNames(missing)));
  if (!unexpected.empty()) parts.push_back(absl::StrCat(unexpected.size(), " unexpected: ", ListNames(unexpected)));
  if (!misshaped.empty()) parts.push_back(absl::StrCat(misshaped.size(), " mis-shaped: ", ListNames(misshaped)));
  return absl::InvalidArgumentError(absl::StrCat(
      "checkpoint ", ckpt.path().string(), " does not match its Qwen2.5-VL config; ", absl::StrJoin(parts, "; ")));
}

}  // namespace

absl::StatusOr<Qwen2_5_VLConfig> CheckpointConfig(const Checkpoint& ckpt) {
  if (!ckpt.config().has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(ckpt.path().string(), " has no config.json"));
  }
  return ParseQwen2_5_VLConfig(*ckpt.config(), (ckpt.path() / "config.json").string());
}

absl::Status VerifyCheckpointKeys(const Checkpoint& ckpt, Qwen2_5_VLModel& model) {
  return MatchKeys(ckpt, model).status();
}

absl::StatusOr<Qwen2_5_VLModel> LoadQwen2_5_VL(const Checkpoint& ckpt, torch::Device device, torch::ScalarType dtype,
                                               const LoadHooks& hooks) {
  ASSIGN_OR_RETURN(Qwen2_5_VLConfig config, CheckpointConfig(ckpt));
  ASSIGN_OR_RETURN(Qwen2_5_VLModel model, TorchCall([&] { return Qwen2_5_VLModel(config); }, "build model"));
  ASSIGN_OR_RETURN(auto keys, MatchKeys(ckpt, model, hooks));
  auto params = model->named_parameters();
  for (const auto& [name, key] : keys) {
    ASSIGN_OR_RETURN(torch::Tensor src, ckpt.Get(key));
    if (hooks.transform) {
      ASSIGN_OR_RETURN(src, hooks.transform(key, src));
    }
    RETURN_IF_ERROR(TorchCall(
        [&] {
          torch::NoGradGuard no_grad;
          // Always a copy: the source views the read-only file mapping.
          params[name].set_data(src.to(device, dtype, /*non_blocking=*/false, /*copy=*/true));
        },
        absl::StrCat("load ", key)));
  }
  model->TieWeights();
  model->eval();
  return model;
}

}  // namespace autoquant
