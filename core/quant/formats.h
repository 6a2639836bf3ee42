// The quantization formats a Linear can be put in: the one registry of them.
//
// Inside core a format is a `Format`; its name ("FP8", "NONE") exists only at
// the edges that write or read it: the checkpoint's quant_algo
// (hf_quant_config), manifests, the baseline cache, the API's score keys.
// Adding a format is one enumerator and one row of kFormats (formats.cc), plus
// its numerics (how a weight and an activation are quantized) and its export
// encoding (the tensors and the quantization_config a checkpoint carries);
// docs/howto-add-a-format.md names every file.
//
// Torch-free.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace autoquant {

enum class Format {
  kFp8,   // FP8 E4M3 weights and activations, per-tensor static scales (ModelOpt FP8_DEFAULT_CFG)
  kNone,  // left in the base dtype (16 bits); always the last candidate, never scored
};

struct FormatSpec {
  Format format;
  absl::string_view name;    // the checkpoint's quant_algo; manifests, baselines, score keys
  absl::string_view recipe;  // ModelOpt's config name ("FP8_DEFAULT_CFG"); "NONE" for kNone
  int bits;                  // weight bits, for the cost model (numel x bits / 16)
};

const FormatSpec& SpecOf(Format f);
absl::string_view FormatName(Format f);
// The edge: a name as written by FormatName. InvalidArgument names the known ones.
absl::StatusOr<Format> ParseFormat(absl::string_view name);
inline bool IsQuantized(Format f) { return f != Format::kNone; }
// "FP8_DEFAULT_CFG(effective-bits: 8.0)", as ModelOpt prints recipes.
std::string RecipeString(Format f);

}  // namespace autoquant
