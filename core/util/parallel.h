// Runs independent, I/O- or hash-bound pieces of work on a few threads:
// hashing a 7 GB scheme tensor by tensor on one core took most of an export's
// time on a 16-core GPU host.
//
//   RETURN_IF_ERROR(ParallelFor(items.size(), [&](size_t i) { return Work(items[i]); }));
//
// Never throws: a thread that cannot be started leaves its share to the others.
#pragma once

#include <cstddef>
#include <functional>

#include "absl/status/status.h"

namespace autoquant {

// Threads ParallelFor uses by default: the hardware's, at most 16, at least 1.
int DefaultParallelism();

// Calls fn(i) once for every i in [0, n) on up to `threads` threads (0 = the
// default), each taking the next index when done with one. Once a call fails,
// no further index is started; returns the failure of the lowest index that
// failed, or OK.
absl::Status ParallelFor(size_t n, const std::function<absl::Status(size_t)>& fn, int threads = 0);

}  // namespace autoquant
