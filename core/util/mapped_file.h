// A read-only mapping of a whole file, unmapped on destruction: lets several
// threads hash or compare a file's bytes without reading it into memory.
//
//   ASSIGN_OR_RETURN(auto m, MappedFile::Open(path));
//   absl::string_view bytes = m->view();
//
// Thread-safe after Open (the view is immutable; MAP_PRIVATE).
#pragma once

#include <filesystem>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace autoquant {

class MappedFile {
 public:
  // Filesystem errors as ErrnoStatus (NotFound for a missing file).
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::filesystem::path& path);
  // Maps the open file `fd` as it is now (the caller keeps and closes `fd`;
  // the mapping outlives it). `shown` names the file in errors.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Map(int fd, const std::filesystem::path& shown);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  absl::string_view view() const { return absl::string_view(data_, size_); }

 private:
  MappedFile() = default;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace autoquant
