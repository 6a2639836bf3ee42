// One quantized weight as a scheme stores it: the values (FP8 codes, or
// packed E2M1 pairs) and the scale produced with them (per tensor, or per
// block). Scales that follow from calibration alone (input scales, NVFP4's
// global scale) are planned on their own (fp8_storage.h, nvfp4_storage.h).
#pragma once

#include <torch/types.h>

#include <string>

namespace autoquant {

struct StoredWeight {
  torch::Tensor weight;        // the stored values, on the producing device or the host
  torch::Tensor weight_scale;  // as the format's storage file says
  std::string weight_sha256;   // hex SHA-256 of weight's bytes, when its producer hashed them
};

}  // namespace autoquant
