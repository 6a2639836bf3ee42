#include "core/util/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "core/util/file_util.h"
#include "core/util/status_macros.h"

namespace autoquant {

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::filesystem::path& path) {
  ASSIGN_OR_RETURN(int fd, OpenRegularFile(path));
  auto m = Map(fd, path);
  ::close(fd);
  return m;
}

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Map(int fd, const std::filesystem::path& shown) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "cannot stat", shown);
  auto m = std::unique_ptr<MappedFile>(new MappedFile());
  m->size_ = static_cast<size_t>(st.st_size);
  if (m->size_ > 0) {
    void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) return ErrnoStatus(errno, "cannot map", shown);
    m->data_ = static_cast<const char*>(p);
  }
  return m;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
}

}  // namespace autoquant
