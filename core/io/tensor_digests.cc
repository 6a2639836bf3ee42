#include "core/io/tensor_digests.h"

#include <map>
#include <mutex>

#include "core/util/file_util.h"
#include "core/util/hash.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace {

struct Remembered {
  FileStamp stamp;
  std::map<std::string, std::string> by_key;
};

std::mutex& Mu() {
  static std::mutex mu;
  return mu;
}

std::map<std::string, Remembered>& ByPath() {
  static auto* m = new std::map<std::string, Remembered>();
  return *m;
}

// The entry for the file as it is now (a stale one is emptied); caller holds Mu().
Remembered* EntryLocked(const SafetensorsFile& file, const FileStamp& stamp) {
  Remembered& r = ByPath()[file.path().string()];
  if (!(r.stamp == stamp)) {
    r.stamp = stamp;
    r.by_key.clear();
  }
  return &r;
}

}  // namespace

std::optional<std::string> RememberedDigest(const SafetensorsFile& file, const std::string& key) {
  auto stamp = FileStampOf(file.path());
  if (!stamp.ok()) return std::nullopt;
  std::lock_guard<std::mutex> lock(Mu());
  Remembered* r = EntryLocked(file, *stamp);
  auto it = r->by_key.find(key);
  if (it == r->by_key.end()) return std::nullopt;
  return it->second;
}

void RememberDigest(const SafetensorsFile& file, const std::string& key, std::string hex) {
  auto stamp = FileStampOf(file.path());
  if (!stamp.ok()) return;
  std::lock_guard<std::mutex> lock(Mu());
  EntryLocked(file, *stamp)->by_key[key] = std::move(hex);
}

absl::StatusOr<std::vector<std::string>> TensorDigestsOf(const SafetensorsFile& file, int threads) {
  ASSIGN_OR_RETURN(FileStamp stamp, FileStampOf(file.path()));
  std::vector<std::string> out(file.tensors().size());
  std::vector<size_t> missing;
  {
    std::lock_guard<std::mutex> lock(Mu());
    Remembered* r = EntryLocked(file, stamp);
    for (size_t i = 0; i < out.size(); ++i) {
      auto it = r->by_key.find(file.tensors()[i].name);
      if (it == r->by_key.end()) {
        missing.push_back(i);
      } else {
        out[i] = it->second;
      }
    }
  }
  if (missing.empty()) return out;
  std::vector<absl::string_view> pieces;
  for (size_t i : missing) pieces.push_back(file.Bytes(file.tensors()[i]));
  ASSIGN_OR_RETURN(std::vector<std::string> hexes, Sha256HexEach(pieces, threads));
  // Replaced while being hashed (the mapping still holds the old bytes): use, but do not remember.
  auto after = FileStampOf(file.path());
  if (!after.ok() || !(*after == stamp)) {
    for (size_t k = 0; k < missing.size(); ++k) out[missing[k]] = std::move(hexes[k]);
    return out;
  }
  std::lock_guard<std::mutex> lock(Mu());
  Remembered* r = EntryLocked(file, stamp);
  for (size_t k = 0; k < missing.size(); ++k) {
    out[missing[k]] = hexes[k];
    r->by_key[file.tensors()[missing[k]].name] = std::move(hexes[k]);
  }
  return out;
}

}  // namespace autoquant
