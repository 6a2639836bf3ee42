#include "core/io/checkpoint_writer.h"

#include <algorithm>
#include <deque>
#include <future>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/file_util.h"
#include "core/util/hash.h"
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
  // Tensors in write order, and the producing tasks over them: a tensor and the ones after_previous.
  std::vector<size_t> order;
  for (const auto& shard : shards) order.insert(order.end(), shard.begin(), shard.end());
  std::vector<std::pair<size_t, size_t>> tasks;  // [begin, end) positions in `order`
  for (size_t k = 0; k < order.size(); ++k) {
    if (k == 0 || !plan[order[k]].after_previous) tasks.emplace_back(k, k);
    tasks.back().second = k + 1;
  }
  // Producing (an FP8 quantization, a device-to-host copy) and hashing run on helper threads, several
  // tensors ahead, while this thread writes: the export then costs about the disk's time.
  struct Produced {
    torch::Tensor host;
    std::string sha256;
  };
  using TaskResult = absl::StatusOr<std::vector<Produced>>;
  auto launch = [&](size_t t) {
    return std::async(std::launch::async, [&plan, &order, range = tasks[t]]() -> TaskResult {
      std::vector<Produced> out;
      for (size_t k = range.first; k < range.second; ++k) {
        const PlannedTensor& p = plan[order[k]];
        ASSIGN_OR_RETURN(torch::Tensor t, TorchCall(p.produce, p.spec.name));
        ASSIGN_OR_RETURN(torch::Tensor host, TorchCall(
                                                 [&] {
                                                   torch::Tensor d = t.layout() == torch::kStrided ? t : t.to_dense();
                                                   return d.to(torch::kCPU).contiguous();
                                                 },
                                                 absl::StrCat("cannot write tensor '", p.spec.name, "'")));
        Sha256 h;
        h.Update(host.const_data_ptr(), static_cast<size_t>(host.nbytes()));
        ASSIGN_OR_RETURN(std::string hex, h.HexDigest());
        out.push_back({std::move(host), std::move(hex)});
      }
      return out;
    });
  };
  std::deque<std::future<TaskResult>> inflight;
  // Whatever happens, the producers in flight finish before `plan` goes out of scope.
  struct Drain {
    std::deque<std::future<TaskResult>>* q;
    ~Drain() {
      for (auto& f : *q) {
        if (f.valid()) f.wait();
      }
    }
  } drain{&inflight};
  size_t next_task = 0;
  auto top_up = [&] {
    while (next_task < tasks.size() && inflight.size() < static_cast<size_t>(std::max(1, options.producers))) {
      inflight.push_back(launch(next_task++));
    }
  };
  top_up();

  std::vector<Produced> ready;  // the current task's tensors, consumed front to back
  size_t ready_pos = 0;
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
      if (ready_pos == ready.size()) {
        // Producers quantize on the device: OOM there must end this write, not the process.
        TaskResult r = inflight.front().get();
        inflight.pop_front();
        if (!r.ok()) return r.status();
        ready = *std::move(r);
        ready_pos = 0;
        top_up();
      }
      Produced& p = ready[ready_pos++];
      RETURN_IF_ERROR(writer.Write(p.host));
      p.host = torch::Tensor();  // written: release it now, not with the whole task
      result.weight_map[plan[i].spec.name] = file;
      result.sha256[plan[i].spec.name] = std::move(p.sha256);
      result.total_bytes += plan[i].spec.nbytes();
      ++k;
      if (options.progress) options.progress(k, plan.size());
    }
    RETURN_IF_ERROR(writer.Finish());
    result.files.push_back(file);
  }
  if (indexed) RETURN_IF_ERROR(WriteSafetensorsIndex(dir, result.weight_map, result.total_bytes));
  return result;
}

}  // namespace autoquant
