#include "core/jobs/request_limits.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/quant/scheme_name.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace {

// Text bytes of one spec, counted as they are checked.
struct Tally {
  size_t text = 0;
  size_t patterns = 0;
};

// One list of a spec: count, each entry's length and bytes, and the tally.
absl::Status CheckList(const std::string& field, const std::vector<std::string>& entries, bool patterns, Tally* tally) {
  RETURN_IF_ERROR(CheckFieldCount(field, entries.size(), kMaxListEntries));
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string& e = entries[i];
    const std::string entry = absl::StrCat(field, "[", i, "]");
    RETURN_IF_ERROR(CheckFieldLength(entry, e, kMaxEntryLength));
    for (unsigned char c : e) {
      // Module names and fnmatch patterns are printable; a control byte is a mistake (or an attack
      // on the logs and manifests the entry is copied into).
      if (c < 0x20 || c == 0x7f) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s holds the control character 0x%02x; %s are printable text", entry, c,
                            patterns ? "patterns" : "group keys"));
      }
    }
    tally->text += e.size();
    if (patterns) tally->patterns += e.size();
  }
  return absl::OkStatus();
}

absl::Status CheckSpec(const JobSpec& spec, const std::string& prefix, size_t* text_bytes) {
  Tally tally;
  // The scheme's form first: it is echoed in later messages, and the '-' rule applies to evaluate jobs too.
  if (absl::Status name = ValidateSchemeName(spec.scheme); !name.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "scheme: ", name.message()));
  }
  tally.text += spec.scheme.size();
  RETURN_IF_ERROR(CheckFieldCount(prefix + "formats", spec.formats.size(), kMaxFormats));
  RETURN_IF_ERROR(CheckList(prefix + "disabled_layers", spec.selection.disabled_layers, true, &tally));
  if (const auto& m = spec.selection.coverage_manifest) {
    RETURN_IF_ERROR(CheckList(prefix + "coverage_manifest.selected_layers", m->selected_layers, false, &tally));
    RETURN_IF_ERROR(CheckList(prefix + "coverage_manifest.dropped_layers", m->dropped_layers, false, &tally));
    RETURN_IF_ERROR(CheckList(prefix + "coverage_manifest.disabled_layers", m->disabled_layers, true, &tally));
  }
  if (tally.patterns > kMaxPatternBytes) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "disabled_layers and ", prefix,
                                                   "coverage_manifest.disabled_layers together hold ", tally.patterns,
                                                   " bytes of patterns; at most ", kMaxPatternBytes,
                                                   " are accepted (a pattern such as '*visual*' covers many "
                                                   "modules)"));
  }
  if (tally.text > kMaxSpecTextBytes) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "spec holds ", tally.text,
                                                   " bytes of names, patterns and group keys; at most ",
                                                   kMaxSpecTextBytes, " are accepted"));
  }
  *text_bytes = tally.text;
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckFieldLength(absl::string_view field, absl::string_view value, size_t max_length) {
  if (value.size() <= max_length) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, " is ", value.size(), " bytes long; at most ", max_length, " are accepted"));
}

absl::Status CheckFieldCount(absl::string_view field, size_t entries, size_t max_entries) {
  if (entries <= max_entries) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, " has ", entries, " entries; at most ", max_entries, " are accepted"));
}

absl::Status CheckSubmitLimits(const std::vector<JobSpec>& specs, absl::string_view idempotency_key) {
  RETURN_IF_ERROR(CheckFieldLength("idempotency_key", idempotency_key, kMaxIdempotencyKeyLength));
  RETURN_IF_ERROR(CheckFieldCount("points", specs.size(), kMaxSweepPoints));
  const bool sweep = specs.size() > 1;
  size_t total = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    size_t text = 0;
    RETURN_IF_ERROR(CheckSpec(specs[i], sweep ? absl::StrCat("points[", i, "].") : "", &text));
    total += text;
  }
  if (total > kMaxSweepTextBytes) {
    return absl::InvalidArgumentError(absl::StrCat("points together hold ", total,
                                                   " bytes of names, patterns and group keys; at most ",
                                                   kMaxSweepTextBytes, " per sweep are accepted (split the sweep)"));
  }
  return absl::OkStatus();
}

}  // namespace autoquant
