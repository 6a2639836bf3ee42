#include "core/io/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/util/file_util.h"
#include "core/util/hash.h"
#include "core/util/mapped_file.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace fs = std::filesystem;

namespace {

constexpr char kDigestPrefix[] = "sha256:";

bool IsHexId(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

// The id a blob file's header hashes to, with the header parsed.
absl::StatusOr<std::pair<SafetensorsHeader, std::string>> HeaderAndId(const MappedFile& m, const fs::path& path) {
  auto header = ParseSafetensorsHeader(m.view(), path.string());
  if (!header.ok()) return absl::DataLossError(header.status().message());
  ASSIGN_OR_RETURN(std::string id, Sha256Hex(m.view().substr(0, header->data_start)));
  return std::make_pair(*std::move(header), std::move(id));
}

// The blob id a ref file holds. DataLoss when it holds anything else.
absl::StatusOr<std::string> ReadRef(const fs::path& ref) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(ref));
  std::string id(absl::StripAsciiWhitespace(text));
  if (!IsHexId(id)) return absl::DataLossError(absl::StrCat("blob reference ", ref.string(), " does not hold a blob id"));
  return id;
}

}  // namespace

// Blobs this process has verified, by path: process-wide, so that every export of a daemon (each
// opens the store anew) hashes a blob once, not once per scheme.
struct BlobStore::Verified {
  std::mutex mu;
  std::map<std::string, std::pair<FileStamp, Blob>> by_path;

  static Verified& Get() {
    static Verified* v = new Verified();
    return *v;
  }
  static void Remember(const fs::path& path, const FileStamp& stamp, const Blob& b) {
    Verified& v = Get();
    std::lock_guard<std::mutex> lock(v.mu);
    v.by_path[path.string()] = {stamp, b};
  }
};

fs::path BlobStore::BlobPath(const std::string& id) const { return root_ / "sha256" / (id + ".safetensors"); }

BlobStore::BlobStore(fs::path root) : root_(std::move(root)) {}

absl::StatusOr<std::string> BlobKey(absl::string_view description) {
  return Sha256Hex(absl::StrCat("autoquant.blob.v1\n", description));
}

absl::StatusOr<BlobStore> BlobStore::Open(const fs::path& root) {
  for (const char* sub : {"sha256", "refs"}) {
    std::error_code ec;
    fs::create_directories(root / sub, ec);
    if (ec) return ErrnoStatus(ec.value(), "cannot create the blob store directory", root / sub);
    RETURN_IF_ERROR(RemoveStaleStaging(root / sub).status());
  }
  return BlobStore(root);
}

absl::StatusOr<Blob> BlobStore::VerifyFile(const fs::path& path) {
  const std::string stem = path.stem().string();
  if (!IsHexId(stem) || path.extension() != ".safetensors") {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), " is not named <sha256>.safetensors"));
  }
  ASSIGN_OR_RETURN(auto m, MappedFile::Open(path));
  ASSIGN_OR_RETURN(auto header_id, HeaderAndId(*m, path));
  const auto& [header, id] = header_id;
  if (id != stem) {
    return absl::DataLossError(absl::StrCat("blob ", path.string(), ": its header hashes to ", id,
                                            ", not to its name; the file was changed after it was written"));
  }
  Blob b;
  b.id = id;
  b.path = path;
  b.tensors = header.tensors;
  std::vector<absl::string_view> bytes;
  for (const auto& t : header.tensors) {
    auto it = header.metadata.find(kDigestPrefix + t.name);
    if (it == header.metadata.end()) {
      return absl::DataLossError(
          absl::StrCat("blob ", path.string(), ": no recorded digest for tensor '", t.name, "'"));
    }
    b.sha256[t.name] = it->second;
    bytes.push_back(m->view().substr(header.data_start + t.begin, t.nbytes()));
    b.data_bytes += t.nbytes();
  }
  ASSIGN_OR_RETURN(std::vector<std::string> hex, Sha256HexEach(bytes));
  for (size_t i = 0; i < hex.size(); ++i) {
    const std::string& name = b.tensors[i].name;
    if (hex[i] != b.sha256[name]) {
      return absl::DataLossError(absl::StrCat("blob ", path.string(), ": tensor '", name,
                                              "' does not match its recorded SHA-256 (recorded ", b.sha256[name],
                                              ", found ", hex[i], ")"));
    }
  }
  return b;
}

absl::StatusOr<Blob> BlobStore::Load(const std::string& id) const {
  const fs::path path = BlobPath(id);
  ASSIGN_OR_RETURN(FileStamp stamp, FileStampOf(path));
  {
    Verified& verified = Verified::Get();
    std::lock_guard<std::mutex> lock(verified.mu);
    auto it = verified.by_path.find(path.string());
    if (it != verified.by_path.end() && it->second.first == stamp) return it->second.second;
  }
  ASSIGN_OR_RETURN(Blob b, VerifyFile(path));
  ASSIGN_OR_RETURN(FileStamp after, FileStampOf(path));
  if (after == stamp) Verified::Remember(path, stamp, b);
  return b;
}

absl::StatusOr<Blob> BlobStore::Find(const std::string& key) const {
  if (!IsHexId(key)) return absl::InvalidArgumentError(absl::StrCat("blob key '", key, "' is not a hex SHA-256"));
  ASSIGN_OR_RETURN(std::string id, ReadRef(root_ / "refs" / key));
  return Load(id);
}

absl::StatusOr<Blob> BlobStore::Put(const std::string& key, const std::vector<BlobTensor>& tensors) const {
  if (!IsHexId(key)) return absl::InvalidArgumentError(absl::StrCat("blob key '", key, "' is not a hex SHA-256"));
  std::vector<torch::Tensor> host;
  std::vector<TensorSpec> specs;
  std::vector<absl::string_view> bytes;
  for (const auto& t : tensors) {
    ASSIGN_OR_RETURN(TensorSpec got, SpecOf(t.spec.name, t.value));
    if (got.dtype != t.spec.dtype || got.shape != t.spec.shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("blob tensor '", t.spec.name, "' does not match its planned dtype and shape"));
    }
    ASSIGN_OR_RETURN(torch::Tensor h, TorchCall([&] { return t.value.to(torch::kCPU).contiguous(); },
                                                absl::StrCat("cannot copy tensor '", t.spec.name, "' to the host")));
    bytes.emplace_back(static_cast<const char*>(h.const_data_ptr()), t.spec.nbytes());
    host.push_back(std::move(h));
    specs.push_back(t.spec);
  }
  ASSIGN_OR_RETURN(std::vector<std::string> hex, Sha256HexEach(bytes));
  std::map<std::string, std::string> metadata = {{"format", "pt"}};
  std::vector<TensorInfo> infos;
  uint64_t offset = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    metadata[kDigestPrefix + specs[i].name] = hex[i];
    infos.push_back({specs[i].name, specs[i].dtype, specs[i].shape, offset, offset + specs[i].nbytes()});
    offset += specs[i].nbytes();
  }
  ASSIGN_OR_RETURN(std::string id, Sha256Hex(SerializeSafetensorsHeader(infos, metadata)));
  const fs::path path = BlobPath(id);

  std::error_code ec;
  bool stored = false;
  if (fs::exists(path, ec)) stored = Load(id).ok();  // a damaged one is written again below
  if (!stored) {
    ASSIGN_OR_RETURN(SafetensorsWriter writer, SafetensorsWriter::Create(path, specs, metadata));
    for (const auto& h : host) RETURN_IF_ERROR(writer.Write(h));
    RETURN_IF_ERROR(writer.Finish());
    if (::chmod(path.c_str(), 0444) != 0) return ErrnoStatus(errno, "cannot make read-only", path);
    // The writer serializes the same header: check that the file is named by what it holds.
    ASSIGN_OR_RETURN(auto m, MappedFile::Open(path));
    ASSIGN_OR_RETURN(auto header_written, HeaderAndId(*m, path));
    const auto& [header, written] = header_written;
    if (written != id) {
      return absl::InternalError(absl::StrCat("blob ", path.string(), " was written with a header that hashes to ",
                                              written, ", not to its name"));
    }
    Blob b;
    b.id = id;
    b.path = path;
    b.tensors = header.tensors;
    for (size_t i = 0; i < specs.size(); ++i) b.sha256[specs[i].name] = hex[i];
    b.data_bytes = offset;
    ASSIGN_OR_RETURN(FileStamp stamp, FileStampOf(path));
    Verified::Remember(path, stamp, b);
  }
  RETURN_IF_ERROR(WriteFileAtomic(root_ / "refs" / key, id + "\n"));
  return Load(id);
}

absl::StatusOr<BlobPlacement> BlobStore::Place(const Blob& blob, const fs::path& dir, bool allow_links) const {
  const fs::path dst = dir / blob.FileName();
  if (allow_links) {
    if (::link(blob.path.c_str(), dst.c_str()) == 0) return BlobPlacement::kLinked;
    const int err = errno;
    if (err != EXDEV && err != EPERM && err != EMLINK && err != ENOTSUP && err != EOPNOTSUPP) {
      return ErrnoStatus(err, absl::StrCat("cannot link blob ", blob.path.string(), " as"), dst);
    }
  }
  std::error_code ec;
  if (!fs::copy_file(blob.path, dst, ec)) {
    return ErrnoStatus(ec ? ec.value() : EIO, absl::StrCat("cannot copy blob ", blob.path.string(), " to"), dst);
  }
  int fd = ::open(dst.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "cannot open", dst);
  const int sync = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (sync != 0) return ErrnoStatus(err, "cannot fsync", dst);
  if (::chmod(dst.c_str(), 0444) != 0) return ErrnoStatus(errno, "cannot make read-only", dst);
  return BlobPlacement::kCopied;
}

absl::StatusOr<BlobGcResult> BlobStore::CollectGarbage(int64_t min_age_seconds, bool dry_run) const {
  BlobGcResult r;
  const auto now = fs::file_time_type::clock::now();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_ / "sha256", ec)) {
    const fs::path& path = e.path();
    if (path.extension() != ".safetensors" || !IsHexId(path.stem().string())) continue;
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    const auto age = now - fs::last_write_time(path, ec);
    if (ec || st.st_nlink > 1 || age < std::chrono::seconds(min_age_seconds)) {
      ++r.blobs_kept;
      continue;
    }
    if (!dry_run && ::unlink(path.c_str()) != 0) return ErrnoStatus(errno, "cannot remove blob", path);
    ++r.blobs_removed;
    r.bytes_freed += static_cast<uint64_t>(st.st_size);
  }
  if (ec) return ErrnoStatus(ec.value(), "cannot list the blob store", root_ / "sha256");
  for (const auto& e : fs::directory_iterator(root_ / "refs", ec)) {
    if (!IsHexId(e.path().filename().string())) continue;
    auto id = ReadRef(e.path());
    if (!id.ok() && !absl::IsDataLoss(id.status())) continue;  // unreadable: leave it
    std::error_code exists_ec;
    if (id.ok() && fs::exists(BlobPath(*id), exists_ec)) continue;
    if (!dry_run && ::unlink(e.path().c_str()) != 0) return ErrnoStatus(errno, "cannot remove blob reference", e.path());
    ++r.refs_removed;
  }
  if (ec) return ErrnoStatus(ec.value(), "cannot list the blob store", root_ / "refs");
  if (!dry_run) RETURN_IF_ERROR(FsyncDir(root_ / "sha256"));
  return r;
}

}  // namespace autoquant
