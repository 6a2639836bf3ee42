// The embedded JobStore: one SQLite database in WAL mode (synchronous=FULL,
// so a committed job survives a crash of the process or the machine).
// Schema versioned through PRAGMA user_version. One connection behind a
// mutex: the daemon's load (one worker plus RPCs) is far below what that
// serves, and it makes every method a plain transaction.
#pragma once

#include <filesystem>
#include <memory>

#include "absl/status/statusor.h"
#include "core/jobs/job_store.h"

namespace autoquant {

inline constexpr int kJobStoreSchemaVersion = 2;  // 2: jobs.cancel_requested

absl::StatusOr<std::unique_ptr<JobStore>> OpenSqliteJobStore(const std::filesystem::path& path);

}  // namespace autoquant
