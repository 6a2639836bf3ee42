#include "core/io/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/io/torch_dtype.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {

uint64_t TensorSpec::nbytes() const {
  uint64_t n = static_cast<uint64_t>(DTypeSize(dtype));
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

absl::StatusOr<TensorSpec> SpecOf(std::string name, const torch::Tensor& t) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is undefined"));
  ASSIGN_OR_RETURN(DType dtype, FromTorch(t.scalar_type()));
  ASSIGN_OR_RETURN(std::vector<int64_t> shape, TorchCall([&] { return t.sizes().vec(); }, name));
  return TensorSpec{std::move(name), dtype, std::move(shape)};
}

absl::StatusOr<SafetensorsWriter> SafetensorsWriter::Create(const std::filesystem::path& path,
                                                            std::vector<TensorSpec> specs,
                                                            const std::map<std::string, std::string>& metadata) {
  std::set<absl::string_view> names;
  std::vector<TensorInfo> infos;
  uint64_t offset = 0;
  for (const auto& s : specs) {
    if (s.name == "__metadata__" || !names.insert(s.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write ", path.string(), ": duplicate or reserved tensor name '", s.name, "'"));
    }
    for (int64_t d : s.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot write ", path.string(), ": tensor '", s.name, "' has a negative dimension"));
      }
    }
    infos.push_back(TensorInfo{s.name, s.dtype, s.shape, offset, offset + s.nbytes()});
    offset += s.nbytes();
  }
  SafetensorsWriter w;
  w.path_ = path;
  w.tmp_ = TempFilePath(path);
  w.specs_ = std::move(specs);
  w.fd_ = ::open(w.tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (w.fd_ < 0) return ErrnoStatus(errno, "cannot create", w.tmp_);
  std::string header = SerializeSafetensorsHeader(infos, metadata);
  RETURN_IF_ERROR(w.WriteBytes(header.data(), header.size()));
  for (const auto& info : infos) w.offsets_.push_back(header.size() + info.begin);
  w.done_.assign(w.specs_.size(), false);
  w.mu_ = std::make_unique<std::mutex>();
  return w;
}

SafetensorsWriter::SafetensorsWriter(SafetensorsWriter&& o) noexcept
    : path_(std::move(o.path_)),
      tmp_(std::move(o.tmp_)),
      fd_(o.fd_),
      specs_(std::move(o.specs_)),
      offsets_(std::move(o.offsets_)),
      next_(o.next_),
      finished_(o.finished_),
      mu_(std::move(o.mu_)),
      done_(std::move(o.done_)),
      written_(o.written_) {
  o.fd_ = -1;
  o.finished_ = true;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!finished_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

absl::Status SafetensorsWriter::WriteBytes(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t k = ::write(fd_, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "cannot write", tmp_);
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::PwriteBytes(const void* data, size_t n, uint64_t offset) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t k = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
    if (k < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "cannot write", tmp_);
    }
    p += k;
    n -= static_cast<size_t>(k);
    offset += static_cast<uint64_t>(k);
  }
  return absl::OkStatus();
}

size_t SafetensorsWriter::written() const {
  if (!mu_) return 0;
  std::lock_guard<std::mutex> lock(*mu_);
  return written_;
}

absl::Status SafetensorsWriter::Write(const torch::Tensor& t) {
  if (next_ >= specs_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("more tensors written to ", path_.string(), " than planned (", specs_.size(), ")"));
  }
  RETURN_IF_ERROR(WriteAt(next_, t));
  ++next_;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::WriteAt(size_t index, const torch::Tensor& t) {
  if (finished_ || fd_ < 0) return absl::FailedPreconditionError("writer already finished");
  if (index >= specs_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("tensor ", index, " written to ", path_.string(), ", which plans ", specs_.size()));
  }
  const TensorSpec& spec = specs_[index];
  ASSIGN_OR_RETURN(TensorSpec got, SpecOf(spec.name, t));
  if (got.dtype != spec.dtype || got.shape != spec.shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", spec.name, "' planned as ", DTypeName(spec.dtype), " [",
                                                   absl::StrJoin(spec.shape, ","), "] but got ", DTypeName(got.dtype),
                                                   " [", absl::StrJoin(got.shape, ","), "]"));
  }
  if (spec.nbytes() > 0) {
    // The copy to the host is where a tensor without readable data fails
    // (meta, a lost CUDA context, OOM for the staging copy).
    ASSIGN_OR_RETURN(torch::Tensor host, TorchCall(
                                             [&] {
                                               torch::Tensor d = t.layout() == torch::kStrided ? t : t.to_dense();
                                               return d.to(torch::kCPU).contiguous();
                                             },
                                             absl::StrCat("cannot write tensor '", spec.name, "'")));
    RETURN_IF_ERROR(Claim(index));
    RETURN_IF_ERROR(PwriteBytes(host.const_data_ptr(), spec.nbytes(), offsets_[index]));
  } else {
    RETURN_IF_ERROR(Claim(index));
  }
  std::lock_guard<std::mutex> lock(*mu_);
  ++written_;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Claim(size_t index) {
  std::lock_guard<std::mutex> lock(*mu_);
  if (done_[index]) {
    return absl::FailedPreconditionError(
        absl::StrCat("tensor '", specs_[index].name, "' written twice to ", path_.string()));
  }
  done_[index] = true;  // a write that fails after this fails the whole file (Finish sees it missing)
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  if (finished_) return absl::FailedPreconditionError("writer already finished");
  if (written() != specs_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("only ", written(), " of ", specs_.size(), " tensors written to ", path_.string()));
  }
  if (::fsync(fd_) != 0) return ErrnoStatus(errno, "cannot fsync", tmp_);
  if (::close(fd_) != 0) {
    fd_ = -1;
    return ErrnoStatus(errno, "cannot close", tmp_);
  }
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) return ErrnoStatus(errno, "cannot rename into place", path_);
  finished_ = true;
  return FsyncDir(path_.parent_path());
}

}  // namespace autoquant
