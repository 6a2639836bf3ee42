#include "core/quant/format_numerics.h"

#include "core/quant/fp8.h"
#include "core/quant/nvfp4.h"

namespace autoquant {

torch::Tensor FakeQuantWeight(Format f, const torch::Tensor& w, const torch::Tensor& amax) {
  switch (f) {
    case Format::kFp8:
      return FakeQuantFp8(w, amax);
    case Format::kNvfp4:
    case Format::kNvfp4W4A16:
      return FakeQuantNvfp4(w, amax);
    case Format::kNone:
      return w;
  }
  return w;
}

torch::Tensor FakeQuantInput(Format f, const torch::Tensor& x, const torch::Tensor& amax) {
  if (!SpecOf(f).quantizes_input) return x;
  return IsNvfp4(f) ? FakeQuantNvfp4(x, amax) : FakeQuantFp8(x, amax);
}

}  // namespace autoquant
