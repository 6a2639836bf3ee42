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

namespace {

// One WriteShardedSafetensors call: the shards' writers, the tasks the workers share, and what they
// found. Workers take tasks and write; the calling thread reports progress, then finishes the shards.
class ShardedWrite {
 public:
  ShardedWrite(const std::vector<PlannedTensor>& plan, const ShardingOptions& options)
      : plan_(plan),
        options_(options),
        shards_(PlanShards(plan, ShardLimit(plan, options))),
        indexed_(shards_.size() > 1 || options.always_index),
        place_(plan.size()),
        sha256_(plan.size()) {}

  // Every shard's file and header first: each tensor's place is then known, and the workers write tensors
  // where they belong, several at once (one writing thread left the disk idle while it waited for the next
  // tensor to be produced and hashed).
  absl::Status OpenShards(const std::filesystem::path& dir) {
    for (size_t s = 0; s < shards_.size(); ++s) {
      std::string file = indexed_ ? absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards_.size())
                                  : std::string("model.safetensors");
      std::vector<TensorSpec> specs;
      for (size_t j = 0; j < shards_[s].size(); ++j) {
        specs.push_back(plan_[shards_[s][j]].spec);
        place_[shards_[s][j]] = {s, j};
      }
      ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(dir / file, specs, options_.metadata));
      writers_.push_back(std::move(writer));
      result_.files.push_back(std::move(file));
    }
    return absl::OkStatus();
  }

  // Tasks over the plan in shard order: a tensor and the ones produced after_previous. Each belongs to the
  // shard of its first tensor; workers take the next task of the shard fewest of them are writing, so that
  // they write different files (writes to one file serialize on its inode lock).
  void PlanTasks() {
    for (const auto& shard : shards_) order_.insert(order_.end(), shard.begin(), shard.end());
    shard_tasks_.resize(shards_.size());
    for (size_t k = 0; k < order_.size(); ++k) {
      if (k == 0 || !plan_[order_[k]].after_previous) {
        shard_tasks_[place_[order_[k]].first].push_back(tasks_.size());
        tasks_.emplace_back(k, k);
      }
      tasks_.back().second = k + 1;
    }
    shard_next_.assign(shards_.size(), 0);
    shard_active_.assign(shards_.size(), 0);
  }

  // Runs the workers and reports progress from this thread (callers' callbacks need not be thread-safe)
  // until they are done; the first error.
  absl::Status Run() {
    const size_t n_workers = std::min<size_t>(tasks_.size(), static_cast<size_t>(std::max(1, options_.producers)));
    workers_left_ = n_workers;
    std::vector<std::thread> threads;
    for (size_t w = 0; w < n_workers; ++w) threads.emplace_back([this] { Work(); });
    ReportProgress();
    for (auto& t : threads) t.join();
    RETURN_IF_ERROR(error_);
    // Set after the last task was taken: still a cancel (the temporary files go with the writers).
    if (Cancelled()) return absl::CancelledError("checkpoint write cancelled");
    return absl::OkStatus();
  }

  // Publishes every shard, and the index when there are several.
  absl::StatusOr<ShardingResult> Finish(const std::filesystem::path& dir) {
    for (size_t s = 0; s < shards_.size(); ++s) {
      RETURN_IF_ERROR(writers_[s].Finish());
      for (size_t i : shards_[s]) {
        result_.weight_map[plan_[i].spec.name] = result_.files[s];
        result_.sha256[plan_[i].spec.name] = std::move(sha256_[i]);
        result_.total_bytes += plan_[i].spec.nbytes();
      }
    }
    if (indexed_) RETURN_IF_ERROR(WriteSafetensorsIndex(dir, result_.weight_map, result_.total_bytes));
    return std::move(result_);
  }

 private:
  bool Cancelled() const { return options_.cancel != nullptr && options_.cancel->load(); }

  // The next task, from the shard with the fewest workers on it (the first such); none when all are taken.
  std::optional<size_t> TakeTask(size_t* shard) {
    std::lock_guard<std::mutex> lock(mu_);
    std::optional<size_t> best;
    for (size_t sh = 0; sh < shards_.size(); ++sh) {
      if (shard_next_[sh] == shard_tasks_[sh].size()) continue;
      if (!best || shard_active_[sh] < shard_active_[*best]) best = sh;
    }
    if (!best) return std::nullopt;
    *shard = *best;
    ++shard_active_[*best];
    return shard_tasks_[*best][shard_next_[*best]++];
  }

  // Records the first error; the workers stop taking tasks once one is set.
  void Fail(absl::Status st) {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = std::move(st);
    stop_ = true;
  }

  // Produces plan tensor `i` (an FP8 quantization, a device-to-host copy), hashes its bytes unless its
  // digest is known, and writes it at its offset.
  absl::Status WriteTensor(size_t i, WriterSeconds* mine) {
    const PlannedTensor& p = plan_[i];
    auto t0 = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(torch::Tensor produced, TorchCall(p.produce, p.spec.name));
    ASSIGN_OR_RETURN(torch::Tensor host,
                     TorchCall(
                         [&] {
                           torch::Tensor d = produced.layout() == torch::kStrided ? produced : produced.to_dense();
                           return d.to(torch::kCPU).contiguous();
                         },
                         absl::StrCat("cannot write tensor '", p.spec.name, "'")));
    auto t1 = std::chrono::steady_clock::now();
    mine->produce += SecondsBetween(t0, t1);
    std::string hex = p.sha256;
    if (hex.empty() && p.produced_sha256) hex = p.produced_sha256();
    if (hex.empty()) {
      Sha256 h;
      h.Update(host.const_data_ptr(), static_cast<size_t>(host.nbytes()));
      ASSIGN_OR_RETURN(hex, h.HexDigest());
    }
    auto t2 = std::chrono::steady_clock::now();
    mine->hash += SecondsBetween(t1, t2);
    absl::Status written = writers_[place_[i].first].WriteAt(place_[i].second, host);
    mine->write += Seconds(t2);
    RETURN_IF_ERROR(written);
    sha256_[i] = std::move(hex);
    return absl::OkStatus();
  }

  // A worker: takes a task, writes its tensors, takes the next.
  void Work() {
    WriterSeconds mine;
    while (!stop_.load()) {
      size_t shard = 0;
      const std::optional<size_t> next = TakeTask(&shard);
      if (!next) break;
      if (Cancelled()) {
        Fail(absl::CancelledError("checkpoint write cancelled"));
        break;
      }
      for (size_t k = tasks_[*next].first; k < tasks_[*next].second && !stop_.load(); ++k) {
        if (absl::Status st = WriteTensor(order_[k], &mine); !st.ok()) {
          Fail(std::move(st));
          break;
        }
        std::lock_guard<std::mutex> lock(mu_);
        ++done_;
        progressed_.notify_one();
      }
      std::lock_guard<std::mutex> lock(mu_);
      --shard_active_[shard];
    }
    std::lock_guard<std::mutex> lock(mu_);
    result_.seconds.produce += mine.produce;
    result_.seconds.hash += mine.hash;
    result_.seconds.write += mine.write;
    --workers_left_;
    progressed_.notify_one();
  }

  // Every count in turn, as the callback's contract says (after each tensor), however many tensors
  // finished while it ran; returns when every worker has stopped.
  void ReportProgress() {
    std::unique_lock<std::mutex> lock(mu_);
    size_t reported = 0;
    while (workers_left_ > 0 || reported != done_) {
      progressed_.wait(lock, [&] { return workers_left_ == 0 || done_ != reported; });
      while (reported != done_) {
        ++reported;
        if (options_.progress && error_.ok()) {
          lock.unlock();
          options_.progress(reported, plan_.size());
          lock.lock();
        }
      }
    }
  }

  const std::vector<PlannedTensor>& plan_;
  const ShardingOptions& options_;
  const std::vector<std::vector<size_t>> shards_;
  const bool indexed_;
  std::vector<SafetensorsWriter> writers_;
  std::vector<std::pair<size_t, size_t>> place_;  // plan index -> (shard, index in shard)
  std::vector<size_t> order_;                     // plan indices in shard order
  std::vector<std::pair<size_t, size_t>> tasks_;  // [begin, end) positions in order_
  std::vector<std::vector<size_t>> shard_tasks_;
  std::vector<std::string> sha256_;  // per plan index; each written by the one worker that wrote the tensor
  ShardingResult result_;

  std::mutex mu_;  // guards what follows
  std::vector<size_t> shard_next_, shard_active_;
  std::condition_variable progressed_;
  size_t done_ = 0, workers_left_ = 0;
  absl::Status error_;  // the first one
  std::atomic<bool> stop_{false};
};

}  // namespace

absl::StatusOr<ShardingResult> WriteShardedSafetensors(const std::filesystem::path& dir,
                                                       const std::vector<PlannedTensor>& plan,
                                                       const ShardingOptions& options) {
  ShardedWrite write(plan, options);
  RETURN_IF_ERROR(write.OpenShards(dir));
  write.PlanTasks();
  RETURN_IF_ERROR(write.Run());
  return write.Finish(dir);
}

}  // namespace autoquant
