#include "core/io/checkpoint.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
absl::StatusOr<json> ReadJson(const fs::path& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not valid JSON"));
  return j;
}
}  // namespace

absl::StatusOr<Checkpoint> Checkpoint::Open(const fs::path& path) {
  Checkpoint c;
  c.path_ = path;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", path.string(), " does not exist"));
  }
  c.is_dir_ = fs::is_directory(path, ec);

  // file name -> names the index assigns to it (empty when there is no index)
  std::map<std::string, std::vector<std::string>> shards;
  if (!c.is_dir_) {
    shards[path.filename().string()];
  } else {
    if (fs::exists(path / "config.json", ec)) {
      ASSIGN_OR_RETURN(c.config_, ReadJson(path / "config.json"));
    }
    fs::path index = path / "model.safetensors.index.json";
    if (fs::exists(index, ec)) {
      ASSIGN_OR_RETURN(json j, ReadJson(index));
      auto wm = j.find("weight_map");
      if (wm == j.end() || !wm->is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(index.string(), ": no 'weight_map' object"));
      }
      for (const auto& [name, file] : wm->items()) {
        if (!file.is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat(index.string(), ": weight_map entry '", name, "' is not a file name"));
        }
        shards[file.get<std::string>()].push_back(name);
      }
      for (const auto& [file, names] : shards) {
        if (!fs::exists(path / file, ec)) {
          return absl::NotFoundError(absl::StrCat("shard ", (path / file).string(), " named by ", index.string(),
                                                  " (for '", names.front(), "' and others) does not exist"));
        }
      }
    } else if (fs::exists(path / "model.safetensors", ec)) {
      shards["model.safetensors"];
    } else {
      return absl::NotFoundError(
          absl::StrCat(path.string(), " holds neither model.safetensors nor model.safetensors.index.json"));
    }
  }

  for (const auto& [file, names] : shards) {
    fs::path fpath = c.is_dir_ ? path / file : path;
    ASSIGN_OR_RETURN(auto st, SafetensorsFile::Open(fpath));
    size_t fi = c.files_.size();
    for (const auto& name : names) {
      if (st->Find(name) == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("index places tensor '", name, "' in ", fpath.string(), " but that shard lacks it"));
      }
    }
    for (const auto& info : st->tensors()) {
      auto [it, inserted] = c.where_.emplace(info.name, std::make_pair(fi, &info));
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", info.name, "' appears in both ",
                                                       c.files_[it->second.first]->path().string(), " and ",
                                                       fpath.string()));
      }
    }
    c.files_.push_back(std::move(st));
  }
  return c;
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, _] : where_) out.push_back(name);
  return out;
}

const SafetensorsFile* Checkpoint::FileOf(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : files_[it->second.first].get();
}

const TensorInfo* Checkpoint::Find(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : it->second.second;
}

absl::StatusOr<torch::Tensor> Checkpoint::Get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not in checkpoint ", path_.string()));
  }
  return files_[it->second.first]->Get(*it->second.second);
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& [_, w] : where_) n += w.second->nbytes();
  return n;
}

const std::vector<std::string>& SideFileNames() {
  static const std::vector<std::string> kNames = {
      "tokenizer.json",
      "tokenizer_config.json",
      "vocab.json",
      "merges.txt",
      "special_tokens_map.json",
      "added_tokens.json",
      "chat_template.json",
      "chat_template.jinja",
      "preprocessor_config.json",
      "video_preprocessor_config.json",
      "processor_config.json",
      "generation_config.json",
      "tokenizer.model",
  };
  return kNames;
}

absl::StatusOr<std::vector<std::string>> CopySideFiles(const fs::path& src, const fs::path& dst) {
  std::vector<std::string> copied;
  for (const auto& name : SideFileNames()) {
    std::error_code ec;
    if (!fs::exists(src / name, ec)) continue;
    ASSIGN_OR_RETURN(std::string data, ReadFile(src / name));
    RETURN_IF_ERROR(WriteFileAtomic(dst / name, data));
    copied.push_back(name);
  }
  return copied;
}

}  // namespace autoquant
