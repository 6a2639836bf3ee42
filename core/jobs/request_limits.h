// Hard limits on what one request to the daemon may hold, checked in one
// place before anything else looks at the request (JobManager::SubmitSweep
// for every submit; the service for the fields of the other RPCs). Every
// later step (validation, the plan, the manifests written into the scheme,
// the stored spec, ListJobs replies) is linear in what passes here, so no
// request can keep the server busy for long or grow the store without bound.
//
// The limits are generous for real use: Qwen2.5-VL-7B has about 250 layer
// groups (with the vision tower), so a coverage manifest naming every group
// key, or one pattern per group, is far below them. Their values are part of
// the API: proto/autoquant/v1/autoquant.proto documents each.
//
// Each refusal is InvalidArgument naming the field (as the proto spells it,
// with "points[i]." in sweeps), the limit and the size found, e.g.
// "disabled_layers: 5000 patterns; at most 4096 are accepted".
//
// Torch-free, gRPC-free, thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/jobs/job.h"

namespace autoquant {

// Entries of each list of a spec: disabled_layers, coverage_manifest.selected_layers,
// .dropped_layers and .disabled_layers.
inline constexpr size_t kMaxListEntries = 4096;
// Entries of a spec's formats (each format at most once, so a longer list is wrong anyway).
inline constexpr size_t kMaxFormats = 8;
// Bytes of one entry of those lists (a pattern or a group key).
inline constexpr size_t kMaxEntryLength = 256;
// Bytes of all patterns of a spec together (disabled_layers and the manifest's): the scheme's
// quant manifest lists, per group, the patterns that disabled it, so this bounds that file too.
inline constexpr size_t kMaxPatternBytes = 64 << 10;
// Bytes of all text of one spec (the scheme name and every list entry): bounds a stored spec.
inline constexpr size_t kMaxSpecTextBytes = 256 << 10;
// Points of one sweep, and the text of all its points together (a sweep's reply echoes every spec
// and must stay under gRPC's default 4 MiB receive limit).
inline constexpr size_t kMaxSweepPoints = 1000;
inline constexpr size_t kMaxSweepTextBytes = 2 << 20;
// idempotency_key (a sweep's per-point key adds "/<scheme>").
inline constexpr size_t kMaxIdempotencyKeyLength = 128;
// A job id in a request (ids the daemon makes are 18 characters).
inline constexpr size_t kMaxJobIdLength = 128;
// Entries of GetReportRequest.job_ids and .schemes together.
inline constexpr size_t kMaxReportEntries = 1000;

// The limits of every spec of one submit (one spec: SubmitScheme or EvaluateScheme; several: a
// sweep's points) and of its idempotency key, including the scheme name's form (scheme_name.h:
// one plain path component, not starting with '-' or '.').
absl::Status CheckSubmitLimits(const std::vector<JobSpec>& specs, absl::string_view idempotency_key);

// `field` holds at most `max_length` bytes.
absl::Status CheckFieldLength(absl::string_view field, absl::string_view value, size_t max_length);
// `field` (a repeated field) holds at most `max_entries` entries.
absl::Status CheckFieldCount(absl::string_view field, size_t entries, size_t max_entries);

}  // namespace autoquant
