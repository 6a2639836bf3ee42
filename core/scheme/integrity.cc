#include "core/scheme/integrity.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "core/io/safetensors_header.h"
#include "core/scheme/manifests.h"
#include "core/util/file_util.h"
#include "core/util/hash.h"
#include "core/util/mapped_file.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The safetensors files of a checkpoint directory, as loaders find them.
absl::StatusOr<std::vector<std::string>> ShardFiles(const fs::path& dir) {
  const fs::path index = dir / "model.safetensors.index.json";
  std::error_code ec;
  if (!fs::exists(index, ec)) {
    if (!fs::exists(dir / "model.safetensors", ec)) {
      return absl::NotFoundError(absl::StrCat(dir.string(), " has neither model.safetensors nor an index"));
    }
    return std::vector<std::string>{"model.safetensors"};
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(index));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
    return absl::DataLossError(absl::StrCat(index.string(), ": not a safetensors index"));
  }
  std::set<std::string> files;
  for (const auto& [_, f] : j["weight_map"].items()) {
    if (!f.is_string()) return absl::DataLossError(absl::StrCat(index.string(), ": weight_map holds a non-string"));
    files.insert(f.get<std::string>());
  }
  return std::vector<std::string>(files.begin(), files.end());
}

}  // namespace

absl::StatusOr<TensorDigests> ComputeTensorDigests(const fs::path& dir) {
  ASSIGN_OR_RETURN(std::vector<std::string> files, ShardFiles(dir));
  struct Piece {
    const std::string* file;
    absl::string_view bytes;
    std::string name, sha256;
  };
  std::vector<std::unique_ptr<MappedFile>> mapped;
  std::vector<Piece> pieces;
  for (const auto& file : files) {
    const fs::path path = dir / file;
    ASSIGN_OR_RETURN(auto m, MappedFile::Open(path));
    auto header = ParseSafetensorsHeader(m->view(), path.string());
    if (!header.ok()) return absl::DataLossError(header.status().message());
    for (const auto& t : header->tensors) {
      pieces.push_back({&file, m->view().substr(header->data_start + t.begin, t.nbytes()), t.name, ""});
    }
    mapped.push_back(std::move(m));
  }
  // One tensor per task: the largest (the embedding) is under a tenth of a 3B scheme.
  std::vector<absl::string_view> bytes;
  for (const auto& p : pieces) bytes.push_back(p.bytes);
  ASSIGN_OR_RETURN(std::vector<std::string> hex, Sha256HexEach(bytes));
  for (size_t i = 0; i < pieces.size(); ++i) pieces[i].sha256 = std::move(hex[i]);
  TensorDigests out;
  for (auto& p : pieces) {
    if (!out.emplace(p.name, TensorDigest{*p.file, std::move(p.sha256)}).second) {
      return absl::DataLossError(absl::StrCat("tensor '", p.name, "' appears in two shards of ", dir.string()));
    }
  }
  return out;
}

nlohmann::ordered_json IntegrityJson(const TensorDigests& digests) {
  nlohmann::ordered_json tensors = nlohmann::ordered_json::object();
  for (const auto& [name, d] : digests) tensors[name] = {{"file", d.file}, {"sha256", d.sha256}};
  return {{"algorithm", "sha256"}, {"tensors", tensors}};
}

namespace {

// The manifest's digest record; the errors VerifySchemeIntegrity documents when there is none.
absl::StatusOr<TensorDigests> RecordedDigests(const fs::path& scheme_dir) {
  ASSIGN_OR_RETURN(SchemeManifest m, ReadSchemeManifest(scheme_dir));
  if (!m.integrity) {
    return absl::FailedPreconditionError(
        absl::StrCat(scheme_dir.string(),
                     ": the quant manifest records no tensor digests (written by an older autoquant); "
                     "export the scheme again"));
  }
  return *std::move(m.integrity);
}

absl::Status Compare(const fs::path& scheme_dir, const TensorDigests& recorded, const TensorDigests& found) {
  for (const auto& [name, want] : recorded) {
    auto it = found.find(name);
    if (it == found.end()) {
      return absl::DataLossError(
          absl::StrCat(scheme_dir.string(), ": tensor '", name, "' (recorded in ", want.file, ") is missing"));
    }
    if (it->second.file != want.file) {
      return absl::DataLossError(absl::StrCat(scheme_dir.string(), ": tensor '", name, "' is in ", it->second.file,
                                              ", the manifest records ", want.file));
    }
    if (it->second.sha256 != want.sha256) {
      return absl::DataLossError(absl::StrCat(scheme_dir.string(), ": tensor '", name, "' in ", want.file,
                                              " does not match its recorded SHA-256 (recorded ", want.sha256,
                                              ", found ", it->second.sha256, "): its bytes changed after export"));
    }
  }
  for (const auto& [name, got] : found) {
    if (!recorded.count(name)) {
      return absl::DataLossError(
          absl::StrCat(scheme_dir.string(), ": tensor '", name, "' in ", got.file, " is not in the manifest's record"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status VerifySchemeIntegrity(const fs::path& scheme_dir) {
  ASSIGN_OR_RETURN(TensorDigests recorded, RecordedDigests(scheme_dir));
  ASSIGN_OR_RETURN(TensorDigests found, ComputeTensorDigests(scheme_dir));
  return Compare(scheme_dir, recorded, found);
}

absl::Status CheckManifestRecords(const fs::path& scheme_dir, const TensorDigests& found) {
  ASSIGN_OR_RETURN(TensorDigests recorded, RecordedDigests(scheme_dir));
  return Compare(scheme_dir, recorded, found);
}

}  // namespace autoquant
