#include "client/cli/numerics_command.h"

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/io/safetensors_file.h"
#include "core/io/safetensors_writer.h"
#include "core/model/device.h"
#include "core/quant/format_numerics.h"
#include "core/quant/formats.h"
#include "core/quant/fp8.h"
#include "core/quant/nvfp4.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant::cli {

absl::Status RunNumerics(const NumericsOptions& o) {
  ASSIGN_OR_RETURN(Format format, ParseFormat(absl::AsciiStrToUpper(o.format)));
  if (!IsQuantized(format)) return absl::InvalidArgumentError("--format NONE has no numerics");
  ASSIGN_OR_RETURN(torch::Device device, ParseDevice(o.device));
  ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> in, SafetensorsFile::Open(o.input));
  std::vector<std::pair<std::string, torch::Tensor>> out;
  RETURN_IF_ERROR(TorchCall(
      [&]() -> absl::Status {
        torch::NoGradGuard no_grad;
        for (const TensorInfo& info : in->tensors()) {
          if (absl::EndsWith(info.name, ".amax")) continue;
          torch::Tensor t = in->Get(info).to(device);
          if (!t.is_floating_point() || t.element_size() < 2) continue;
          torch::Tensor amax = Amax(t);
          if (const TensorInfo* a = in->Find(info.name + ".amax"))
            amax = in->Get(*a).to(device, torch::kFloat32).reshape({});
          const std::string& n = info.name;
          out.emplace_back(n + ".fake", FakeQuantWeight(format, t, amax));
          if (format == Format::kFp8) {
            torch::Tensor s = Fp8ScaleFromAmax(amax);
            out.emplace_back(n + ".q", QuantizeFp8(t, s));
            out.emplace_back(n + ".scale", s);
            continue;
          }
          if (t.size(-1) % kNvfp4Block != 0) {
            return absl::InvalidArgumentError(absl::StrCat("tensor '", n, "' has a last dimension of ", t.size(-1),
                                                           ", not a multiple of ", kNvfp4Block, " as NVFP4 needs"));
          }
          Nvfp4Tensor q = QuantizeNvfp4(t, amax);
          out.emplace_back(n + ".packed", q.packed);
          out.emplace_back(n + ".block_scale", q.block_scale);
          out.emplace_back(n + ".global_scale", q.global_scale);
          out.emplace_back(n + ".dequant", DequantizeNvfp4(q));
          out.emplace_back(n + ".vllm_input", QuantDequantNvfp4Input(t, 1.0f / Nvfp4GlobalScaleFromAmax(amax)));
        }
        for (auto& [name, value] : out) value = value.cpu().contiguous();
        return absl::OkStatus();
      },
      "applying the format's numerics"));
  std::vector<TensorSpec> specs;
  for (const auto& [name, t] : out) {
    ASSIGN_OR_RETURN(TensorSpec spec, SpecOf(name, t));
    specs.push_back(std::move(spec));
  }
  ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(o.output, specs, {{"format", "pt"}}));
  for (const auto& [name, t] : out) RETURN_IF_ERROR(writer.Write(t));
  return writer.Finish();
}

void AddNumericsCommand(CLI::App& app, absl::Status* status) {
  auto o = std::make_shared<NumericsOptions>();
  CLI::App* cmd = app.add_subcommand(
      "numerics",
      "Apply a format's quantizers to the tensors of a .safetensors file (to check them against other tools)");
  cmd->add_option("--format", o->format, "fp8 | nvfp4 | w4a16_nvfp4")->required();
  cmd->add_option("--in", o->input, "tensors to quantize (T.amax, when present, is T's amax)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o->output, "where the results go (a .safetensors file)")->required();
  cmd->add_option("--device", o->device, "cpu | cuda");
  cmd->callback([o, status] { *status = RunNumerics(*o); });
}

}  // namespace autoquant::cli
