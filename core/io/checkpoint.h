// A Hugging Face checkpoint: a directory with config.json and either
// model.safetensors or shards listed in model.safetensors.index.json; or a
// single .safetensors file.
//
//   ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open("/models/Qwen2.5-VL-3B-Instruct"));
//   ASSIGN_OR_RETURN(torch::Tensor w, ckpt.Get("model.norm.weight"));
//
// Open validates the whole set before anything is read: a shard named by the
// index but missing, a tensor the index places in a shard that lacks it, and a
// tensor name present in two shards are errors naming the files. Thread-safe
// after Open (const methods only).
#pragma once

#include <torch/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/safetensors_file.h"
#include "nlohmann/json.hpp"

namespace autoquant {

class Checkpoint {
 public:
  static absl::StatusOr<Checkpoint> Open(const std::filesystem::path& path);

  // The directory (or, for a single file, the file itself).
  const std::filesystem::path& path() const { return path_; }
  bool is_directory() const { return is_dir_; }
  // config.json, if the directory has one.
  const std::optional<nlohmann::json>& config() const { return config_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }

  // Sorted tensor names.
  std::vector<std::string> TensorNames() const;
  size_t num_tensors() const { return where_.size(); }
  // nullptr if absent.
  const TensorInfo* Find(const std::string& name) const;
  // NotFound naming the tensor if absent.
  absl::StatusOr<torch::Tensor> Get(const std::string& name) const;
  // The file holding `name`; nullptr if absent.
  const SafetensorsFile* FileOf(const std::string& name) const;
  // Sum of tensor bytes (what an index's metadata.total_size records).
  uint64_t total_bytes() const;

 private:
  std::filesystem::path path_;
  bool is_dir_ = false;
  std::optional<nlohmann::json> config_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>> where_;  // name -> (file, info)
};

// The side files a checkpoint carries besides weights and config: tokenizer,
// processor, chat template, generation config. Copies those present in `src`
// to `dst` and returns their names.
absl::StatusOr<std::vector<std::string>> CopySideFiles(const std::filesystem::path& src,
                                                       const std::filesystem::path& dst);
// The names CopySideFiles looks for.
const std::vector<std::string>& SideFileNames();

}  // namespace autoquant
