#include "core/io/safetensors_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/io/torch_dtype.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"

namespace autoquant {

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr != nullptr && size > 0) ::munmap(addr, size);
  }
  const char* data() const { return static_cast<const char*>(addr); }
};

SafetensorsFile::~SafetensorsFile() = default;

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::filesystem::path& path) {
  // A regular file only: a FIFO planted as a shard must not block open() for ever.
  ASSIGN_OR_RETURN(int fd, OpenRegularFile(path));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "cannot stat", path);
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->size = static_cast<size_t>(st.st_size);
  if (mapping->size > 0) {
    // Private + writable: tensors handed out are copy-on-write views, never file writes.
    void* addr = ::mmap(nullptr, mapping->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return ErrnoStatus(err, "cannot mmap", path);
    }
    mapping->addr = addr;
  }
  ::close(fd);

  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->size_ = mapping->size;
  ASSIGN_OR_RETURN(file->header_,
                   ParseSafetensorsHeader(absl::string_view(mapping->data(), mapping->size), path.string()));
  file->mapping_ = std::move(mapping);
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) {
    file->index_.emplace(file->header_.tensors[i].name, i);
  }
  return file;
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

absl::StatusOr<torch::Tensor> SafetensorsFile::Get(absl::string_view name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not in ", path_.string()));
  }
  return Get(*info);
}

absl::string_view SafetensorsFile::HeaderBytes() const {
  return absl::string_view(mapping_->data(), header_.data_start);
}

absl::string_view SafetensorsFile::Bytes(const TensorInfo& info) const {
  return absl::string_view(mapping_->data() + header_.data_start + info.begin, info.nbytes());
}

torch::Tensor SafetensorsFile::Get(const TensorInfo& info) const {
  auto options = torch::TensorOptions().dtype(ToTorch(info.dtype)).device(torch::kCPU);
  if (info.nbytes() == 0) return torch::empty(info.shape, options);
  char* ptr = const_cast<char*>(mapping_->data()) + header_.data_start + info.begin;
  const auto elem = static_cast<uintptr_t>(DTypeSize(info.dtype));
  if (reinterpret_cast<uintptr_t>(ptr) % elem != 0) {
    // Typed access through a misaligned pointer is undefined: copy the bytes instead.
    torch::Tensor copy = torch::empty(info.shape, options);
    std::memcpy(copy.data_ptr(), ptr, info.nbytes());
    return copy;
  }
  std::shared_ptr<Mapping> keep = mapping_;
  return torch::from_blob(
      ptr, info.shape, [keep](void*) mutable { keep.reset(); }, options);
}

}  // namespace autoquant
