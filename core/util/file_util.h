// Small POSIX file helpers that report errors as absl::Status.
//
// Atomic publication: write to a temporary name in the same directory, fsync
// the file, rename it into place, fsync the directory. A crash at any point
// leaves either the old file or the new one, never a half-written file under
// the final name.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace autoquant {

// Reads a whole file. NotFound if it does not exist.
absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path);

// Streams a file through `consume` in chunks of up to 1 MiB (for hashing
// files too large to hold in memory).
absl::Status ReadFileChunks(const std::filesystem::path& path,
                            const std::function<void(const char* data, size_t n)>& consume);

// Writes `data` to `path` atomically (temp file + fsync + rename + dir fsync).
absl::Status WriteFileAtomic(const std::filesystem::path& path, absl::string_view data);

// fsyncs a directory so that a rename inside it is durable.
absl::Status FsyncDir(const std::filesystem::path& dir);

// A fresh, uniquely named sibling of `target` (same filesystem, so renames are
// atomic), e.g. "/models/.top10.tmp-4f2a91". Not created.
std::filesystem::path TempSiblingPath(const std::filesystem::path& target);

// Creates a temporary directory next to `target`, and on Commit() renames it to
// `target`. Destroyed without Commit(), it removes the temporary directory, so
// nothing half-written ever appears under the final name.
//
// Commit() fails with AlreadyExists if `target` exists and overwrite is false.
// With overwrite, the old directory is moved aside first and removed after the
// new one is in place. Not thread-safe.
class StagedDir {
 public:
  static absl::StatusOr<StagedDir> Create(const std::filesystem::path& target, bool overwrite);
  StagedDir(StagedDir&& other) noexcept;
  StagedDir& operator=(StagedDir&&) = delete;
  ~StagedDir();

  const std::filesystem::path& path() const { return staging_; }
  const std::filesystem::path& target() const { return target_; }
  absl::Status Commit();

 private:
  StagedDir(std::filesystem::path staging, std::filesystem::path target, bool overwrite)
      : staging_(std::move(staging)), target_(std::move(target)), overwrite_(overwrite) {}
  std::filesystem::path staging_;
  std::filesystem::path target_;
  bool overwrite_ = false;
  bool done_ = false;
};

// Errno as a Status, naming what failed on which path.
absl::Status ErrnoStatus(int err, absl::string_view what, const std::filesystem::path& path);

}  // namespace autoquant
