// A memory-mapped safetensors file whose tensors come out as torch::Tensor.
//
//   ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open("model.safetensors"));
//   ASSIGN_OR_RETURN(torch::Tensor w, file->Get("model.norm.weight"));
//
// Tensors are zero-copy views of the mapping when the data is aligned for its
// element type (and a copy otherwise). The mapping is private copy-on-write:
// writing to a returned tensor never changes the file. A returned tensor keeps
// the mapping alive, so it may outlive the SafetensorsFile.
//
// Thread safety: after Open, all methods are const and safe to call
// concurrently.
#pragma once

#include <torch/types.h>

#include <filesystem>
#include <memory>
#include <string_view>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/io/safetensors_header.h"

namespace autoquant {

class SafetensorsFile {
 public:
  // NotFound if the file is missing; InvalidArgument (naming the file) if it is
  // malformed: see ParseSafetensorsHeader.
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> Open(const std::filesystem::path& path);
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  uint64_t file_size() const { return size_; }

  // nullptr if absent.
  const TensorInfo* Find(absl::string_view name) const;
  // NotFound naming the tensor and the file if absent.
  absl::StatusOr<torch::Tensor> Get(absl::string_view name) const;
  torch::Tensor Get(const TensorInfo& info) const;
  // The raw bytes of the header (length prefix included) and of one tensor, in the mapping.
  absl::string_view HeaderBytes() const;
  absl::string_view Bytes(const TensorInfo& info) const;

 private:
  struct Mapping;
  SafetensorsFile() = default;
  std::filesystem::path path_;
  std::shared_ptr<Mapping> mapping_;
  uint64_t size_ = 0;
  SafetensorsHeader header_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace autoquant
