#include "core/io/checkpoint_writer.h"

#include <future>

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
  // The next tensor is produced (an FP8 quantization, a device-to-host copy) on a second thread while
  // this one writes the current: the export then costs about the larger of the two, not their sum.
  auto produce = [&](size_t i) {
    return std::async(std::launch::async, [&plan, i] { return TorchCall(plan[i].produce, plan[i].spec.name); });
  };
  std::vector<size_t> order;
  for (const auto& shard : shards) order.insert(order.end(), shard.begin(), shard.end());
  std::future<absl::StatusOr<torch::Tensor>> next;
  if (!order.empty()) next = produce(order[0]);
  // Whatever happens, the producer in flight finishes before `plan` goes out of scope.
  struct Drain {
    std::future<absl::StatusOr<torch::Tensor>>* f;
    ~Drain() {
      if (f->valid()) f->wait();
    }
  } drain{&next};
  size_t k = 0;
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
      absl::StatusOr<torch::Tensor> t = next.get();
      if (++k < order.size() && t.ok()) next = produce(order[k]);
      if (!t.ok()) return t.status();
      RETURN_IF_ERROR(writer.Write(*t));
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
