// Each format's fake quantizers, as ModelOpt computes them (so that scores
// agree with ModelOpt's): the one place the scoring hooks dispatch on a
// Format. A format's own numerics live in its file (fp8.h, nvfp4.h).
#pragma once

#include <torch/types.h>

#include "core/quant/formats.h"

namespace autoquant {

// w fake-quantized in format f with calibrated (per-tensor) amax, in w's
// dtype; NONE returns w.
torch::Tensor FakeQuantWeight(Format f, const torch::Tensor& w, const torch::Tensor& amax);
// x as format f's input quantizer passes it on: fake-quantized for formats
// that quantize activations, x itself for weight-only formats and NONE.
torch::Tensor FakeQuantInput(Format f, const torch::Tensor& x, const torch::Tensor& amax);

}  // namespace autoquant
