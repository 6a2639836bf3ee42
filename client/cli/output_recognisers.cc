#include "client/cli/output_recognisers.h"

#include "absl/strings/str_cat.h"
#include "core/io/safetensors_file.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace autoquant::cli {

absl::Status RecogniseSafetensors(const std::filesystem::path& path, absl::string_view format) {
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return absl::FailedPreconditionError("not a safetensors file");
  auto it = (*file)->metadata().find("autoquant.format");
  if (it == (*file)->metadata().end()) return absl::FailedPreconditionError("a safetensors file without our mark");
  if (it->second != format) {
    return absl::FailedPreconditionError(absl::StrCat("an autoquant file of another kind (", it->second, ")"));
  }
  return absl::OkStatus();
}

absl::Status RecogniseCheckpointDir(const std::filesystem::path& dir, absl::string_view format) {
  std::error_code ec;
  if (std::filesystem::exists(dir / "model.safetensors", ec))
    return RecogniseSafetensors(dir / "model.safetensors", format);
  auto index = ReadFile(dir / "model.safetensors.index.json");
  if (!index.ok()) return absl::FailedPreconditionError("no model.safetensors and no index");
  auto j = nlohmann::json::parse(*index, nullptr, false);
  if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object() || j["weight_map"].empty()) {
    return absl::FailedPreconditionError("an unreadable safetensors index");
  }
  for (const auto& [_, f] : j["weight_map"].items()) {
    if (!f.is_string()) break;
    return RecogniseSafetensors(dir / f.get<std::string>(), format);
  }
  return absl::FailedPreconditionError("an unreadable safetensors index");
}

}  // namespace autoquant::cli
