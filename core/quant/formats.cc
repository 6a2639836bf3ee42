#include "core/quant/formats.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace autoquant {
namespace {

// Indexed by Format; the order of the enumerators.
constexpr FormatSpec kFormats[] = {
    {Format::kFp8, "FP8", "FP8_DEFAULT_CFG", 8},
    {Format::kNone, "NONE", "NONE", 16},
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

std::string RecipeString(Format f) {
  return absl::StrFormat("%s(effective-bits: %.1f)", SpecOf(f).recipe, double(SpecOf(f).bits));
}

}  // namespace autoquant
