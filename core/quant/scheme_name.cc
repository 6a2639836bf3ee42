#include "core/quant/scheme_name.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace autoquant {
namespace {

constexpr char kAccepted[] =
    "a scheme name is 1 to 128 characters from letters, digits and . _ + -, not starting with a dot or a '-' "
    "(e.g. top10, fp8-eb12.5)";

bool Allowed(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' || c == '+';
}

}  // namespace

absl::Status ValidateSchemeName(absl::string_view name) {
  auto bad = [&](absl::string_view why) {
    // The name may hold a NUL or control bytes: show it escaped.
    std::string shown;
    for (char c : name.substr(0, 64)) {
      shown += absl::ascii_isprint(static_cast<unsigned char>(c))
                   ? std::string(1, c)
                   : absl::StrCat("\\x", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("scheme name '", shown, name.size() > 64 ? "..." : "", "' ", why, ": ", kAccepted));
  };
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat("the scheme name is empty: ", kAccepted));
  if (name.size() > kMaxSchemeNameLength) return bad(absl::StrCat("is ", name.size(), " characters long"));
  if (name.front() == '.') return bad("starts with a dot");
  // In users' scripts a scheme name becomes a command-line argument (autoquant eval NAME, ls, rm): one
  // beginning with '-' would be read as an option.
  if (name.front() == '-') return bad("starts with '-' (it would read as an option on command lines)");
  for (char c : name) {
    if (c == '/') return bad("contains '/'");
    if (!Allowed(c)) return bad("contains a character outside the accepted set");
  }
  return absl::OkStatus();
}

}  // namespace autoquant
