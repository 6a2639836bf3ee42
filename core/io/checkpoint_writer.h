// Streaming, sharded writer for a checkpoint's weights.
//
// Tensors are described up front (name, dtype, shape) and produced lazily by a
// callback, on `producers` worker threads that each produce a tensor, hash it
// and write it at its place in its shard (every shard's header is written
// first): peak memory is a few tensors, not one model, and the disk is kept
// busy while tensors are quantized and hashed.
//
//   std::vector<PlannedTensor> plan = ...;
//   RETURN_IF_ERROR(WriteShardedSafetensors(staged.path(), plan, {.max_shard_bytes = 5 << 30}));
//
// One shard is written as model.safetensors (as save_pretrained does) unless
// always_index is set; several as model-0000K-of-0000N.safetensors plus
// model.safetensors.index.json with metadata.total_size and weight_map. Every
// file is written atomically; callers that need the whole directory to appear
// at once write into a StagedDir.
#pragma once

#include <torch/types.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/safetensors_writer.h"

namespace autoquant {

struct PlannedTensor {
  TensorSpec spec;
  // Called once, on a worker thread; several run at once
  // (ShardingOptions::producers). Must return a tensor matching `spec`. A torch exception it lets escape is turned into
  // a Status (TorchCall).
  std::function<absl::StatusOr<torch::Tensor>()> produce;
  // Produced right after the previous tensor, by the same task: for a
  // producer that reads what the previous one left (a weight's scale).
  bool after_previous = false;
  // The hex SHA-256 of the bytes `produce` returns, when the caller already
  // knows it (tensor_digests.h): taken as is, not hashed again.
  std::string sha256;
  // When the digest is not known up front but `produce` may have learned it
  // (a helper thread hashed the bytes while the writers were busy): called on
  // the worker right after `produce` returned; "" = the worker hashes them.
  std::function<std::string()> produced_sha256;
};

struct ShardingOptions {
  uint64_t max_shard_bytes = 5ull << 30;  // save_pretrained's default of "5GB"
  bool always_index = false;
  std::map<std::string, std::string> metadata = {{"format", "pt"}};
  // Checked between tensors; when set, writing stops with Cancelled.
  const std::atomic<bool>* cancel = nullptr;
  // Called on the calling thread once per tensor written, with (tensors written so far, total), in order.
  std::function<void(size_t, size_t)> progress;
  // Worker threads, each producing, hashing and writing a task (a tensor and
  // those produced after_previous) at a time.
  int producers = 8;
  // > 0: shards are made smaller than max_shard_bytes, down to this size, so that there are about as many
  // as workers: writes into one file serialize (the inode's lock), writes into several run in parallel
  // (tmpfs took 3 GB/s into one file from 8 threads, 22 GB/s into 8 files). 0: max_shard_bytes only.
  uint64_t min_shard_bytes = 0;
};

// Where the workers' time went, summed over the worker threads (so up to
// `producers` times the wall time): what a slow write is waiting for.
struct WriterSeconds {
  double produce = 0;  // the producers (quantizing, device-to-host copies) and the copy to dense host memory
  double hash = 0;     // SHA-256 of bytes whose digest was not known
  double write = 0;    // pwrite into the shards
};

struct ShardingResult {
  std::vector<std::string> files;                 // shard file names, in order
  std::map<std::string, std::string> weight_map;  // tensor -> file
  std::map<std::string, std::string> sha256;      // tensor -> hex SHA-256 of the bytes written
  uint64_t total_bytes = 0;
  WriterSeconds seconds;
};

// The shard size WriteShardedSafetensors uses: max_shard_bytes, or with
// min_shard_bytes set, the plan's bytes over the workers, clamped to
// [min_shard_bytes, max_shard_bytes].
uint64_t ShardLimit(const std::vector<PlannedTensor>& plan, const ShardingOptions& options);

// Splits `plan` (in order) into shards of at most max_shard_bytes (a tensor
// larger than that gets a shard of its own).
std::vector<std::vector<size_t>> PlanShards(const std::vector<PlannedTensor>& plan, uint64_t max_shard_bytes);

// Writes model.safetensors.index.json (metadata.total_size and weight_map,
// tensor -> shard file) atomically into `dir`.
absl::Status WriteSafetensorsIndex(const std::filesystem::path& dir,
                                   const std::map<std::string, std::string>& weight_map, uint64_t total_bytes);

absl::StatusOr<ShardingResult> WriteShardedSafetensors(const std::filesystem::path& dir,
                                                       const std::vector<PlannedTensor>& plan,
                                                       const ShardingOptions& options);

}  // namespace autoquant
