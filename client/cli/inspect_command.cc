#include "client/cli/inspect_command.h"

#include <iostream>
#include <map>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/io/checkpoint.h"
#include "core/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace autoquant::cli {

absl::Status RunInspect(const InspectOptions& options, std::ostream& out) {
  ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open(options.path));
  struct Row {
    std::string name, file;
    const TensorInfo* info;
  };
  std::vector<Row> rows;
  for (const auto& f : ckpt.files()) {
    for (const auto& t : f->tensors()) rows.push_back({t.name, f->path().filename().string(), &t});
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.name < b.name; });

  uint64_t total_bytes = 0;
  int64_t total_params = 0;
  std::map<std::string, std::pair<int64_t, uint64_t>> by_dtype;  // dtype -> (count, bytes)
  for (const auto& r : rows) {
    total_bytes += r.info->nbytes();
    total_params += r.info->numel();
    auto& d = by_dtype[std::string(DTypeName(r.info->dtype))];
    d.first += 1;
    d.second += r.info->nbytes();
  }

  if (options.json) {
    nlohmann::ordered_json j;
    j["path"] = ckpt.path().string();
    j["files"] = nlohmann::json::array();
    for (const auto& f : ckpt.files()) {
      j["files"].push_back({{"file", f->path().filename().string()},
                            {"bytes", f->file_size()},
                            {"tensors", f->tensors().size()},
                            {"metadata", f->metadata()}});
    }
    j["tensors"] = nlohmann::json::array();
    for (const auto& r : rows) {
      j["tensors"].push_back({{"name", r.name},
                              {"dtype", DTypeName(r.info->dtype)},
                              {"shape", r.info->shape},
                              {"bytes", r.info->nbytes()},
                              {"file", r.file}});
    }
    j["num_tensors"] = rows.size();
    j["total_bytes"] = total_bytes;
    j["total_params"] = total_params;
    nlohmann::ordered_json bd = nlohmann::ordered_json::object();
    for (const auto& [k, v] : by_dtype) bd[k] = {{"tensors", v.first}, {"bytes", v.second}};
    j["by_dtype"] = bd;
    out << j.dump(2) << "\n";
    return absl::OkStatus();
  }

  size_t width = 4;
  for (const auto& r : rows) width = std::max(width, r.name.size());
  out << absl::StrFormat("%-*s  %-7s  %-20s  %12s\n", width, "name", "dtype", "shape", "bytes");
  for (const auto& r : rows) {
    out << absl::StrFormat("%-*s  %-7s  %-20s  %12d\n", width, r.name, DTypeName(r.info->dtype),
                           "[" + absl::StrJoin(r.info->shape, ", ") + "]", r.info->nbytes());
  }
  out << absl::StrFormat("\n%d tensors in %d file(s), %d parameters, %d bytes\n", rows.size(), ckpt.files().size(),
                         total_params, total_bytes);
  for (const auto& [k, v] : by_dtype) {
    out << absl::StrFormat("  %-7s %6d tensors %14d bytes\n", k, v.first, v.second);
  }
  return absl::OkStatus();
}

void AddInspectCommand(CLI::App& app, absl::Status* status) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand("inspect", "List the tensors of a .safetensors file or checkpoint dir");
  cmd->add_option("path", options->path, "a .safetensors file or a checkpoint directory")->required();
  cmd->add_flag("--json", options->json, "machine-readable output");
  cmd->callback([options, status] { *status = RunInspect(*options, std::cout); });
}

}  // namespace autoquant::cli
