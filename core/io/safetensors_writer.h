// Streaming, atomic safetensors writer.
//
// The header needs every tensor's dtype and shape up front; the data is then
// written tensor by tensor, so a whole model is never copied in memory:
//
//   ASSIGN_OR_RETURN(auto w, SafetensorsWriter::Create(path, specs, {{"format", "pt"}}));
//   for (...) RETURN_IF_ERROR(w.Write(tensor));   // in the order of `specs`
//   RETURN_IF_ERROR(w.Finish());
//
// Tensors may also be written by position, in any order and from several
// threads at once (WriteAt: each at its own offset, with pwrite), which is how
// the sharded writer keeps several producers writing in parallel.
//
// Bytes go to a temporary sibling file (TempFilePath, file_util.h); Finish()
// fsyncs it and renames it to `path`. Destroyed without Finish() (error,
// cancel), the temporary file is removed and `path` is untouched; a killed
// process leaves it for RemoveStaleStaging. Only WriteAt is thread-safe (with
// itself); Create, Write, Finish and destruction are not.
#pragma once

#include <torch/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/safetensors_header.h"

namespace autoquant {

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  uint64_t nbytes() const;
};

// The spec that describes `t` (dtype must be one safetensors holds).
absl::StatusOr<TensorSpec> SpecOf(std::string name, const torch::Tensor& t);

class SafetensorsWriter {
 public:
  // InvalidArgument for duplicate names; errno-based errors for the filesystem.
  static absl::StatusOr<SafetensorsWriter> Create(const std::filesystem::path& path, std::vector<TensorSpec> specs,
                                                  const std::map<std::string, std::string>& metadata);
  SafetensorsWriter(SafetensorsWriter&& other) noexcept;
  SafetensorsWriter& operator=(SafetensorsWriter&&) = delete;
  ~SafetensorsWriter();

  // Writes the next tensor; its dtype and shape must match the next spec
  // (InvalidArgument otherwise). Accepts any device and layout; a tensor whose
  // data cannot be copied to the host (e.g. on the meta device) is Internal,
  // out of memory for that copy ResourceExhausted. Never throws.
  absl::Status Write(const torch::Tensor& t);
  // Writes tensor `index` of the specs (same checks as Write); FailedPrecondition
  // for an index out of range or written before. Thread-safe.
  absl::Status WriteAt(size_t index, const torch::Tensor& t);
  // FailedPrecondition if tensors are missing.
  absl::Status Finish();

  const std::vector<TensorSpec>& specs() const { return specs_; }
  size_t written() const;

 private:
  SafetensorsWriter() = default;
  absl::Status WriteBytes(const void* data, size_t n);
  absl::Status PwriteBytes(const void* data, size_t n, uint64_t offset);
  // Marks tensor `index` as written; FailedPrecondition if it was already.
  absl::Status Claim(size_t index);
  std::filesystem::path path_;
  std::filesystem::path tmp_;
  int fd_ = -1;
  std::vector<TensorSpec> specs_;
  std::vector<uint64_t> offsets_;  // of each tensor's bytes in the file
  size_t next_ = 0;                // Write's position
  bool finished_ = false;
  std::unique_ptr<std::mutex> mu_;  // guards done_ and written_ (a pointer: the writer is movable)
  std::vector<bool> done_;
  size_t written_ = 0;
};

}  // namespace autoquant
