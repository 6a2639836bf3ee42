// The embedded JobStore: one SQLite database in WAL mode (synchronous=FULL,
// so a committed job survives a crash of the process or the machine).
// Schema versioned through PRAGMA user_version. Tables: jobs, logs, and blobs
// (the records of the blobs the daemon produced, blob_records.h). Two connections, each behind a
// mutex: one writes (every write method is a plain transaction on it; the daemon's load, one
// worker plus RPCs, is far below what that serves), one reads (Get, List, ReadLogs, counts, blob
// lookups), so that reads never wait behind a write that waits for the disk or for SQLite's lock.
//
// A missing file is created whole (under a temporary name, then linked into
// place); an existing file that is not an SQLite database, an empty one
// included, is refused (DataLoss), never taken for a new store. A full disk
// is ResourceExhausted ("the disk holding the job store ... is full"), and a
// failed COMMIT is rolled back, so the store works again once space returns.
#pragma once

#include <filesystem>
#include <memory>

#include "absl/status/statusor.h"
#include "core/jobs/job_store.h"

namespace autoquant {

inline constexpr int kJobStoreSchemaVersion = 4;  // 2: jobs.cancel_requested, 3: jobs.affinity, 4: blobs

// `max_pages_for_test` > 0: SQLite refuses to grow the file past that many
// pages (SQLITE_FULL), as a full disk would; for tests only.
absl::StatusOr<std::unique_ptr<JobStore>> OpenSqliteJobStore(const std::filesystem::path& path,
                                                             int64_t max_pages_for_test = 0);

}  // namespace autoquant
