// Drives the C++ safetensors reader and writer for the Python tests, which
// compare against the `safetensors` package:
//   st_tool dump PATH OUTDIR     read PATH (file or checkpoint dir) with our
//                                reader; write each tensor's raw bytes to
//                                OUTDIR/<i>.bin and a manifest.json
//   st_tool write MANIFEST OUT [--shard-bytes N]
//                                build tensors from the raw .bin files a
//                                manifest lists and write them with our
//                                writer (a file, or a sharded dir with N)
#include <torch/torch.h>

#include <fstream>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/string_view.h"
#include "core/io/checkpoint.h"
#include "core/io/checkpoint_writer.h"
#include "core/io/torch_dtype.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace autoquant {
namespace fs = std::filesystem;
using json = nlohmann::json;

absl::Status Dump(const fs::path& path, const fs::path& out) {
  ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open(path));
  fs::create_directories(out);
  json manifest;
  manifest["tensors"] = json::array();
  int i = 0;
  for (const auto& name : ckpt.TensorNames()) {
    ASSIGN_OR_RETURN(torch::Tensor t, ckpt.Get(name));
    const TensorInfo* info = ckpt.Find(name);
    std::string file = std::to_string(i++) + ".bin";
    torch::Tensor c = t.contiguous();
    RETURN_IF_ERROR(WriteFileAtomic(
        out / file, absl::string_view(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size())));
    manifest["tensors"].push_back(
        {{"name", name}, {"dtype", DTypeName(info->dtype)}, {"shape", t.sizes().vec()}, {"file", file}});
  }
  json meta = json::object();
  for (const auto& f : ckpt.files()) {
    for (const auto& [k, v] : f->metadata()) meta[k] = v;
  }
  manifest["metadata"] = meta;
  return WriteFileAtomic(out / "manifest.json", manifest.dump(2));
}

absl::Status Write(const fs::path& manifest_path, const fs::path& out, uint64_t shard_bytes) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(manifest_path));
  json manifest = json::parse(text);
  std::map<std::string, std::string> meta;
  if (manifest.contains("metadata")) meta = manifest["metadata"].get<std::map<std::string, std::string>>();
  std::vector<PlannedTensor> plan;
  for (const auto& e : manifest["tensors"]) {
    auto dtype = DTypeFromName(e["dtype"].get<std::string>());
    if (!dtype) return absl::InvalidArgumentError("bad dtype in manifest");
    TensorSpec spec{e["name"], *dtype, e["shape"].get<std::vector<int64_t>>()};
    fs::path bin = manifest_path.parent_path() / e["file"].get<std::string>();
    plan.push_back({spec, [spec, bin]() -> absl::StatusOr<torch::Tensor> {
                      ASSIGN_OR_RETURN(std::string bytes, ReadFile(bin));
                      torch::Tensor t = torch::empty(spec.shape, torch::dtype(ToTorch(spec.dtype)));
                      if (bytes.size() != spec.nbytes()) return absl::InvalidArgumentError("size mismatch");
                      if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
                      return t;
                    }});
  }
  if (shard_bytes == 0) {
    std::vector<TensorSpec> specs;
    for (const auto& p : plan) specs.push_back(p.spec);
    ASSIGN_OR_RETURN(auto w, SafetensorsWriter::Create(out, specs, meta));
    for (const auto& p : plan) {
      ASSIGN_OR_RETURN(torch::Tensor t, p.produce());
      RETURN_IF_ERROR(w.Write(t));
    }
    return w.Finish();
  }
  fs::create_directories(out);
  ShardingOptions opts;
  opts.max_shard_bytes = shard_bytes;
  opts.metadata = meta;
  return WriteShardedSafetensors(out, plan, opts).status();
}

}  // namespace autoquant

int main(int argc, char** argv) {
  CLI::App app{"st_tool"};
  app.require_subcommand(1);
  std::string in, out;
  uint64_t shard_bytes = 0;
  absl::Status status;
  auto* dump = app.add_subcommand("dump");
  dump->add_option("path", in)->required();
  dump->add_option("out", out)->required();
  dump->callback([&] { status = autoquant::Dump(in, out); });
  auto* write = app.add_subcommand("write");
  write->add_option("manifest", in)->required();
  write->add_option("out", out)->required();
  write->add_option("--shard-bytes", shard_bytes);
  write->callback([&] { status = autoquant::Write(in, out, shard_bytes); });
  CLI11_PARSE(app, argc, argv);
  if (!status.ok()) {
    std::cerr << "st_tool: " << status << "\n";
    return 1;
  }
  return 0;
}
