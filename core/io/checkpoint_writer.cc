#include "core/io/checkpoint_writer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/elapsed.h"
#include "core/util/file_util.h"
#include "core/util/hash.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"
#include "nlohmann/json.hpp"

namespace autoquant {

std::vector<std::vector<size_t>> PlanShards(const std::vector<PlannedTensor>& plan, uint64_t max_shard_bytes) {
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

uint64_t ShardLimit(const std::vector<PlannedTensor>& plan, const ShardingOptions& options) {
  if (options.min_shard_bytes == 0 || options.producers <= 1) return options.max_shard_bytes;
  uint64_t total = 0;
  for (const auto& p : plan) total += p.spec.nbytes();
  const uint64_t even = (total + options.producers - 1) / static_cast<uint64_t>(options.producers);
  return std::clamp(even, std::min(options.min_shard_bytes, options.max_shard_bytes), options.max_shard_bytes);
}

absl::StatusOr<ShardingResult> WriteShardedSafetensors(const std::filesystem::path& dir,
                                                       const std::vector<PlannedTensor>& plan,
                                                       const ShardingOptions& options) {
  auto shards = PlanShards(plan, ShardLimit(plan, options));
  const bool indexed = shards.size() > 1 || options.always_index;
  ShardingResult result;
  // Every shard's file and header first: each tensor's place is then known, and the workers below write
  // tensors where they belong, several at once (one writing thread left the disk idle while it waited
  // for the next tensor to be produced and hashed).
  std::vector<SafetensorsWriter> writers;
  std::vector<std::pair<size_t, size_t>> place(plan.size());  // plan index -> (shard, index in shard)
  for (size_t s = 0; s < shards.size(); ++s) {
    std::string file = indexed ? absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards.size())
                               : std::string("model.safetensors");
    std::vector<TensorSpec> specs;
    for (size_t j = 0; j < shards[s].size(); ++j) {
      specs.push_back(plan[shards[s][j]].spec);
      place[shards[s][j]] = {s, j};
    }
    ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(dir / file, specs, options.metadata));
    writers.push_back(std::move(writer));
    result.files.push_back(std::move(file));
  }
  // Tasks over the plan in shard order: a tensor and the ones produced after_previous. Each belongs to the
  // shard of its first tensor; workers take the next task of the shard fewest of them are writing, so that
  // they write different files (writes to one file serialize on its inode lock).
  std::vector<size_t> order;
  for (const auto& shard : shards) order.insert(order.end(), shard.begin(), shard.end());
  std::vector<std::pair<size_t, size_t>> tasks;  // [begin, end) positions in `order`
  std::vector<std::vector<size_t>> shard_tasks(shards.size());
  for (size_t k = 0; k < order.size(); ++k) {
    if (k == 0 || !plan[order[k]].after_previous) {
      shard_tasks[place[order[k]].first].push_back(tasks.size());
      tasks.emplace_back(k, k);
    }
    tasks.back().second = k + 1;
  }
  std::vector<size_t> shard_next(shards.size(), 0), shard_active(shards.size(), 0);

  std::vector<std::string> sha256(plan.size());
  std::mutex mu;
  std::condition_variable progressed;
  size_t done = 0, workers_left = 0;
  absl::Status error;  // the first one; the workers stop taking tasks once it is set
  std::atomic<bool> stop{false};
  // The next task, from the shard with the fewest workers on it (the first such); none when all are taken.
  auto take_task = [&](size_t* shard) -> std::optional<size_t> {
    std::lock_guard<std::mutex> lock(mu);
    std::optional<size_t> best;
    for (size_t sh = 0; sh < shards.size(); ++sh) {
      if (shard_next[sh] == shard_tasks[sh].size()) continue;
      if (!best || shard_active[sh] < shard_active[*best]) best = sh;
    }
    if (!best) return std::nullopt;
    *shard = *best;
    ++shard_active[*best];
    return shard_tasks[*best][shard_next[*best]++];
  };
  auto fail = [&](absl::Status st) {
    std::lock_guard<std::mutex> lock(mu);
    if (error.ok()) error = std::move(st);
    stop = true;
  };
  // Each worker produces a task's tensors (an FP8 quantization, a device-to-host copy), hashes their bytes
  // and writes them at their offsets, then takes the next task.
  auto work = [&] {
    WriterSeconds mine;
    while (!stop.load()) {
      size_t shard = 0;
      const std::optional<size_t> next = take_task(&shard);
      if (!next) break;
      const size_t t = *next;
      if (options.cancel != nullptr && options.cancel->load()) {
        fail(absl::CancelledError("checkpoint write cancelled"));
        break;
      }
      for (size_t k = tasks[t].first; k < tasks[t].second && !stop.load(); ++k) {
        const size_t i = order[k];
        const PlannedTensor& p = plan[i];
        auto t0 = std::chrono::steady_clock::now();
        absl::StatusOr<torch::Tensor> host = TorchCall(p.produce, p.spec.name);
        if (host.ok()) {
          host = TorchCall(
              [&] {
                torch::Tensor d = host->layout() == torch::kStrided ? *host : host->to_dense();
                return d.to(torch::kCPU).contiguous();
              },
              absl::StrCat("cannot write tensor '", p.spec.name, "'"));
        }
        if (!host.ok()) {
          fail(host.status());
          break;
        }
        auto t1 = std::chrono::steady_clock::now();
        mine.produce += SecondsBetween(t0, t1);
        absl::StatusOr<std::string> hex = p.sha256;
        if (hex->empty() && p.produced_sha256) hex = p.produced_sha256();
        if (hex->empty()) {
          Sha256 h;
          h.Update(host->const_data_ptr(), static_cast<size_t>(host->nbytes()));
          hex = h.HexDigest();
        }
        auto t2 = std::chrono::steady_clock::now();
        mine.hash += SecondsBetween(t1, t2);
        absl::Status st = hex.ok() ? writers[place[i].first].WriteAt(place[i].second, *host) : hex.status();
        mine.write += Seconds(t2);
        if (!st.ok()) {
          fail(std::move(st));
          break;
        }
        sha256[i] = *std::move(hex);
        std::lock_guard<std::mutex> lock(mu);
        ++done;
        progressed.notify_one();
      }
      std::lock_guard<std::mutex> lock(mu);
      --shard_active[shard];
    }
    std::lock_guard<std::mutex> lock(mu);
    result.seconds.produce += mine.produce;
    result.seconds.hash += mine.hash;
    result.seconds.write += mine.write;
    --workers_left;
    progressed.notify_one();
  };
  const size_t n_workers = std::min<size_t>(tasks.size(), static_cast<size_t>(std::max(1, options.producers)));
  workers_left = n_workers;
  std::vector<std::thread> threads;
  for (size_t w = 0; w < n_workers; ++w) threads.emplace_back(work);
  {
    // Progress from this thread only (callers' callbacks need not be thread-safe).
    std::unique_lock<std::mutex> lock(mu);
    size_t reported = 0;
    // Every count in turn, as the callback's contract says (after each tensor), however many tensors
    // finished while it ran.
    while (workers_left > 0 || reported != done) {
      progressed.wait(lock, [&] { return workers_left == 0 || done != reported; });
      while (reported != done) {
        ++reported;
        if (options.progress && error.ok()) {
          lock.unlock();
          options.progress(reported, plan.size());
          lock.lock();
        }
      }
    }
  }
  for (auto& t : threads) t.join();
  RETURN_IF_ERROR(error);
  // Set after the last task was taken: still a cancel (the temporary files go with the writers).
  if (options.cancel != nullptr && options.cancel->load()) return absl::CancelledError("checkpoint write cancelled");
  for (size_t s = 0; s < shards.size(); ++s) {
    RETURN_IF_ERROR(writers[s].Finish());
    for (size_t i : shards[s]) {
      result.weight_map[plan[i].spec.name] = result.files[s];
      result.sha256[plan[i].spec.name] = std::move(sha256[i]);
      result.total_bytes += plan[i].spec.nbytes();
    }
  }
  if (indexed) RETURN_IF_ERROR(WriteSafetensorsIndex(dir, result.weight_map, result.total_bytes));
  return result;
}

}  // namespace autoquant
