#include "core/io/checkpoint_writer.h"

#include "absl/strings/str_format.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"
#include "nlohmann/json.hpp"

namespace autoquant {

std::vector<std::vector<size_t>> PlanShards(const std::vector<PlannedTensor>& plan,
                                            uint64_t max_shard_bytes) {
  std::vector<std::vector<size_t>> shards;
  uint64_t current = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    uint64_t n = plan[i].spec.nbytes();
    if (shards.empty() || (current + n > max_shard_bytes && !shards.back().empty())) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += n;
  }
  if (shards.empty()) shards.emplace_back();
  return shards;
}

absl::Status WriteSafetensorsIndex(const std::filesystem::path& dir,
                                   const std::map<std::string, std::string>& weight_map, uint64_t total_bytes) {
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total_bytes}};
  index["weight_map"] = nlohmann::ordered_json(weight_map);
  return WriteFileAtomic(dir / "model.safetensors.index.json", index.dump(2) + "\n");
}

absl::StatusOr<ShardingResult> WriteShardedSafetensors(const std::filesystem::path& dir,
                                                       const std::vector<PlannedTensor>& plan,
                                                       const ShardingOptions& options) {
  auto shards = PlanShards(plan, options.max_shard_bytes);
  const bool indexed = shards.size() > 1 || options.always_index;
  ShardingResult result;
  size_t done = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    std::string file = indexed ? absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards.size())
                               : std::string("model.safetensors");
    std::vector<TensorSpec> specs;
    for (size_t i : shards[s]) specs.push_back(plan[i].spec);
    ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(dir / file, specs, options.metadata));
    for (size_t i : shards[s]) {
      if (options.cancel != nullptr && options.cancel->load()) {
        return absl::CancelledError("checkpoint write cancelled");
      }
      // Producers quantize on the device: OOM there must end this write, not the process.
      ASSIGN_OR_RETURN(torch::Tensor t, TorchCall(plan[i].produce, plan[i].spec.name));
      RETURN_IF_ERROR(writer.Write(t));
      result.weight_map[plan[i].spec.name] = file;
      result.total_bytes += plan[i].spec.nbytes();
      if (options.progress) options.progress(++done, plan.size());
    }
    RETURN_IF_ERROR(writer.Finish());
    result.files.push_back(file);
  }
  if (indexed) RETURN_IF_ERROR(WriteSafetensorsIndex(dir, result.weight_map, result.total_bytes));
  return result;
}

}  // namespace autoquant
