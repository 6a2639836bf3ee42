#include "core/quant/formats.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace autoquant {
namespace {

// Indexed by Format; the order of the enumerators.
// NVFP4 keeps out of the vision tower: its MLP's inner width (3420 for Qwen2.5-VL) is not a
// multiple of 16, and ModelOpt and vLLM leave multimodal towers unquantized for 4-bit formats
// (garbage image embeddings, ModelOpt PR #1691).
constexpr FormatSpec kFormats[] = {
    {Format::kNvfp4, "NVFP4", "NVFP4_DEFAULT_CFG", 4.5, 16, true, false},
    {Format::kNvfp4W4A16, "W4A16_NVFP4", "W4A16_NVFP4_CFG", 4.5, 16, false, false},
    {Format::kFp8, "FP8", "FP8_DEFAULT_CFG", 8, 0, true, true},
    {Format::kNone, "NONE", "NONE", 16, 0, false, true},
};

}  // namespace

const FormatSpec& SpecOf(Format f) { return kFormats[static_cast<size_t>(f)]; }

absl::string_view FormatName(Format f) { return SpecOf(f).name; }

absl::StatusOr<Format> ParseFormat(absl::string_view name) {
  std::string known;
  for (const FormatSpec& s : kFormats) {
    if (s.name == name) return s.format;
    absl::StrAppend(&known, known.empty() ? "" : ", ", s.name);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown quantization format '", name, "' (known: ", known, ")"));
}

absl::StatusOr<std::vector<Format>> ParseFormatList(absl::string_view list) {
  std::vector<Format> out;
  for (absl::string_view item : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    absl::StatusOr<Format> f = ParseFormat(absl::AsciiStrToUpper(absl::StripAsciiWhitespace(item)));
    if (!f.ok()) return f.status();
    out.push_back(*f);
  }
  return out;
}

std::string RecipeString(Format f) {
  return absl::StrFormat("%s(effective-bits: %.1f)", SpecOf(f).recipe, SpecOf(f).bits);
}

std::vector<Format> QuantizedFormats() {
  std::vector<Format> out;
  for (const FormatSpec& s : kFormats) {
    if (IsQuantized(s.format)) out.push_back(s.format);
  }
  return out;
}

bool MoreAggressive(Format a, Format b) {
  if (SpecOf(a).bits != SpecOf(b).bits) return SpecOf(a).bits < SpecOf(b).bits;
  return static_cast<int>(a) < static_cast<int>(b);
}

absl::StatusOr<std::vector<Format>> CandidateFormats(const std::vector<Format>& requested) {
  std::vector<Format> out = requested.empty() ? std::vector<Format>{Format::kFp8} : requested;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!IsQuantized(out[i])) {
      return absl::InvalidArgumentError(
          "formats lists NONE: leaving groups in the base dtype is always a candidate; list only quantized formats");
    }
    if (std::find(out.begin(), out.begin() + i, out[i]) != out.begin() + i) {
      return absl::InvalidArgumentError(absl::StrCat("formats lists ", FormatName(out[i]), " twice"));
    }
  }
  std::stable_sort(out.begin(), out.end(), MoreAggressive);
  out.push_back(Format::kNone);
  return out;
}

bool FormatFits(Format f, int64_t in_features, bool vision) {
  const FormatSpec& s = SpecOf(f);
  if (vision && !s.vision) return false;
  return s.block_size == 0 || in_features % s.block_size == 0;
}

}  // namespace autoquant
