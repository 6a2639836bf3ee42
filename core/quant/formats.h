// The quantization formats a Linear can be put in: the one registry of them.
//
// Inside core a format is a `Format`; its name ("NVFP4", "FP8", "NONE") exists
// only at the edges that write or read it: the checkpoint's quant_algo
// (hf_quant_config), manifests, the baseline cache, the API's score keys.
// Adding a format is one enumerator and one row of kFormats (formats.cc), plus
// its numerics (format_numerics.h: how a weight and an activation are
// quantized) and its export encoding (format_storage.h: the tensors a
// checkpoint carries); docs/howto-add-a-format.md names every file.
//
// Torch-free.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace autoquant {

enum class Format {
  // NVFP4 W4A4 (ModelOpt NVFP4_DEFAULT_CFG): E2M1 weights in blocks of 16 along the input dimension,
  // one E4M3 scale per block, one float32 global scale per tensor; activations likewise with a
  // static global scale (calibrated amax) and per-block scales computed at run time.
  kNvfp4,
  // NVFP4 weight-only (ModelOpt W4A16_NVFP4_CFG): NVFP4's weights, activations in the base dtype.
  kNvfp4W4A16,
  kFp8,   // FP8 E4M3 weights and activations, per-tensor static scales (ModelOpt FP8_DEFAULT_CFG)
  kNone,  // left in the base dtype (16 bits); always the last candidate, never scored
};

struct FormatSpec {
  Format format;
  absl::string_view name;    // the checkpoint's quant_algo; manifests, baselines, score keys
  absl::string_view recipe;  // ModelOpt's config name ("FP8_DEFAULT_CFG"); "NONE" for kNone
  double bits;               // weight bits for the cost model (numel x bits / 16), as ModelOpt >= 0.46 counts
  int block_size;            // elements per scale along the input dimension; 0: one scale per tensor
  bool quantizes_input;      // activations quantized too (W?A?), not weight-only
  bool vision;               // may quantize vision-tower Linears
};

const FormatSpec& SpecOf(Format f);
absl::string_view FormatName(Format f);
// The edge: a name as written by FormatName. InvalidArgument names the known ones.
absl::StatusOr<Format> ParseFormat(absl::string_view name);
// A comma-separated list as the CLI takes it ("nvfp4,fp8"): names in any case,
// blanks ignored; "" is the empty list (the default). InvalidArgument as ParseFormat.
absl::StatusOr<std::vector<Format>> ParseFormatList(absl::string_view list);
inline bool IsQuantized(Format f) { return f != Format::kNone; }
// NVFP4's numerics and encodings, with or without quantized inputs.
inline bool IsNvfp4(Format f) { return f == Format::kNvfp4 || f == Format::kNvfp4W4A16; }
// The search-space order: fewer bits first, ties in the registry's order (as ModelOpt sorts its
// recipes by compression).
bool MoreAggressive(Format a, Format b);
// "FP8_DEFAULT_CFG(effective-bits: 8.0)", as ModelOpt prints recipes.
std::string RecipeString(Format f);
// Every quantized format, in the registry's order.
std::vector<Format> QuantizedFormats();

// A request's search space as the baseline and the search use it: the
// quantized formats sorted most aggressive first (fewest bits; ties in the
// registry's order, as ModelOpt sorts its recipes by compression), then
// Format::kNone. Empty `requested` means FP8 alone, the default.
// InvalidArgument for NONE or a repeated format in `requested`.
absl::StatusOr<std::vector<Format>> CandidateFormats(const std::vector<Format>& requested);

// Whether a Linear of `in_features` inputs (in the vision tower or not) can
// be put in `f`: block formats need whole blocks, and a format may keep out of
// the vision tower. NONE fits everything.
bool FormatFits(Format f, int64_t in_features, bool vision);

}  // namespace autoquant
