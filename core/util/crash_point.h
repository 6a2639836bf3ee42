// Crash points for the fault suite (tests/python/test_faults.py): with
// AUTOQUANT_CRASH_AT="NAME[:N]" in its environment, a process SIGKILLs itself
// the N-th time (default 1) it passes CrashPoint("NAME"). Lets a test stop the
// daemon exactly where a crash is most dangerous (after a scheme is published
// but before its job is recorded, mid-calibration, ...) as `kill -9` would,
// and reproducibly from a seed. Without the variable a call is one relaxed
// atomic load.
//
//   CrashPoint("published");    // AUTOQUANT_CRASH_AT=published   -> killed here
//   CrashPoint(event.phase);    // AUTOQUANT_CRASH_AT=score:3     -> killed at the third scoring event
//
// Names in use: "submitted" (a job stored, its RPC not yet answered), "claimed"
// (a job taken from the queue, not yet run), "load" (model loading),
// "calibrate" / "score" / "search" / "export" / "evaluate" (a job's progress
// events), "published" (a scheme renamed into place, its job not yet marked
// SUCCEEDED). Thread-safe.
#pragma once

#include <string_view>

namespace autoquant {

void CrashPoint(std::string_view name);

}  // namespace autoquant
