// The fleet's JobStore: one PostgreSQL database (libpqxx) shared by every
// daemon of a fleet, one daemon per GPU (docs/fleet.md).
//
//   JobStoreOptions o{.owner = NewDaemonId(), .lease_seconds = 30};
//   ASSIGN_OR_RETURN(auto store, OpenJobStore("postgresql://autoquant@db:5432/autoquant", o));
//
// Tables (created, and migrated later, by the first daemon that connects,
// under an advisory lock; versioned in autoquant_schema):
//   autoquant_jobs      one row per job, with the lease columns owner,
//                       lease_epoch (fencing token), lease_expires (the
//                       database's clock, so daemons' clocks need not agree)
//                       and affinity (model + calibration fingerprints)
//   autoquant_job_logs  every job's log lines, so any daemon serves any job's log
//   autoquant_blobs     blob key -> id and size of the blobs the daemons
//                       produced (blob_records.h), shared like the models volume
//
// How the fleet stays exactly-once:
//   - claims are `SELECT ... FOR UPDATE SKIP LOCKED`: two daemons never take
//     one job, and neither waits for the other;
//   - the owner's writes are conditioned on owner and lease_epoch, so once a
//     job was re-queued after its lease expired, the old owner gets Aborted;
//   - publishing runs inside WhileLeaseHeld, which renews the lease and then
//     holds the job's row lock (FOR UPDATE) around the rename, so a re-queue
//     (which locks the row) cannot happen between the check and the rename.
//
// Connections: a small pool, one connection per concurrent call; a
// connection found broken is dropped and the call retried once on a fresh
// one (a transaction whose commit may have happened is never retried), so a
// restarted database server costs one failed call at most. Every session
// sets lock_timeout (a call never hangs behind a stopped daemon's lock; it
// fails Unavailable) and TCP keepalives (the server frees the locks of a
// daemon whose host died within about 25 s).
//
// Thread-safe; errors: Unavailable when the server cannot be reached,
// Aborted for a fenced write whose lease is lost, Internal for an SQL error
// (its SQLSTATE named), FailedPrecondition for a schema newer than this
// binary's.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/jobs/job_store.h"

namespace autoquant {

inline constexpr int kPostgresSchemaVersion = 2;  // 2: autoquant_blobs

absl::StatusOr<std::unique_ptr<JobStore>> OpenPostgresJobStore(const std::string& url, const JobStoreOptions& options);

// `url` with any password replaced by "***", for messages and logs.
std::string RedactedStoreUrl(const std::string& url);

}  // namespace autoquant
