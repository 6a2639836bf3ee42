// Fault points for the fault suite (tests/python/test_faults.py). With
// AUTOQUANT_CRASH_AT="NAME[:N]" in its environment, a process SIGKILLs itself
// the N-th time (default 1) it passes CrashPoint("NAME"): the daemon stops
// exactly where a crash is most dangerous (after a scheme is published but
// before its job is recorded, mid-calibration, ...) as `kill -9` would, and
// reproducibly from a seed. With AUTOQUANT_OOM_AT="NAME[:N]", the next torch
// CPU allocation after the N-th pass throws c10::OutOfMemoryError, as a full
// GPU does (cpu_alloc_fault.h): the job must fail with ResourceExhausted and
// the process go on. Without the variables a call costs a string compare.
//
//   CrashPoint("published");    // AUTOQUANT_CRASH_AT=published   -> killed here
//   CrashPoint(PhaseName(e.phase)); // AUTOQUANT_OOM_AT=score:3       -> out of memory after the third scoring event
//
// Names in use: "submitted" (a job stored, its RPC not yet answered), "claimed"
// (a job taken from the queue, not yet run), "load" (model loading),
// "calibrate" / "score" / "search" / "export" / "evaluate" (a job's progress
// events), "publish" (a scheme complete and verified in its staging
// directory, about to be renamed into place), "published" (a scheme renamed
// into place, its job not yet marked SUCCEEDED). Thread-safe.
//
// AUTOQUANT_CRASH_SIGNAL=SIGSTOP stops the process there instead of killing
// it (every thread, as a hung host or a paused VM would), until a SIGCONT:
// the fleet tests use it to let a daemon's lease expire mid-job and then
// resume it as a late writer.
#pragma once

#include <string_view>

namespace autoquant {

void CrashPoint(std::string_view name);

}  // namespace autoquant
