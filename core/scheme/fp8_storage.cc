#include "core/scheme/fp8_storage.h"

#include <torch/torch.h>

#include "core/io/torch_dtype.h"
#include "core/quant/fp8.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace {

// amax / 448 in the stored dtype and shape, on amax's device (IEEE float32
// arithmetic and round-to-nearest casts: the same value on the CPU and on
// CUDA). A scale that would underflow to 0 in a narrow dtype (float16)
// becomes its smallest normal value instead, so that no division by zero
// reaches the weights.
torch::Tensor StoredScale(const torch::Tensor& amax, DType base, ExportFormat f) {
  const c10::ScalarType dtype = ToTorch(ScaleDType(f, base));
  const float tiny = dtype == torch::kHalf ? 6.103515625e-05f : 1.17549435e-38f;
  torch::Tensor s = Fp8ScaleFromAmax(amax).clamp_min(tiny).to(dtype);
  return s.reshape(ScaleShape(f));
}

}  // namespace

DType ScaleDType(ExportFormat f, DType base) {
  if (f == ExportFormat::kModelOpt) return DType::kF32;
  return base == DType::kBF16 || base == DType::kF16 ? base : DType::kF32;
}

std::vector<int64_t> ScaleShape(ExportFormat f) {
  return f == ExportFormat::kCompressedTensors ? std::vector<int64_t>{1} : std::vector<int64_t>{};
}

absl::StatusOr<StoredWeight> QuantizeForExport(const torch::Tensor& w, ExportFormat f) {
  return TorchCall(
      [&]() -> absl::StatusOr<StoredWeight> {
        ASSIGN_OR_RETURN(DType base, FromTorch(w.scalar_type()));
        StoredWeight out;
        // All on w's device, without a sync: IEEE float32 division and the same saturating cast give
        // the same bytes on the CPU and on CUDA (bench/perf checks a GPU export against a CPU
        // re-quantization).
        torch::Tensor amax;
        AccumulateAmax(w.detach(), &amax);
        out.weight_scale = StoredScale(amax, base, f);
        out.weight = QuantizeFp8(w, out.weight_scale.to(torch::kFloat32).reshape({}));
        return out;
      },
      "FP8 export of a weight");
}

absl::StatusOr<torch::Tensor> StoredInputScale(float input_amax, DType base, ExportFormat f) {
  return TorchCall([&] { return StoredScale(torch::tensor(input_amax), base, f); }, "FP8 input scale");
}

}  // namespace autoquant
