// The `autoquant` exit codes, the same for every command:
//   0  success
//   1  runtime failure (the request was fine; something failed while doing it:
//      I/O, device, a scheme that fails its integrity or diversity check)
//   2  usage or validation error (bad flags or values, CLI11's parse errors,
//      an output that would hit an input, an existing output without
//      --overwrite, an infeasible target, a missing input)
// The commands against a daemon (submit, sweep, status, wait, logs, list,
// cancel, sensitivity, server info) add:
//   1  also: a job waited for (wait, --wait, logs -f) failed or was cancelled
//   3  the daemon is unreachable or refused the request's credentials
//      (UNAVAILABLE, DEADLINE_EXCEEDED, UNAUTHENTICATED, PERMISSION_DENIED)
// Scripts can retry on 1 and 3 and must fix the command on 2.
#pragma once

#include "absl/status/status.h"

namespace autoquant::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnavailable = 3;

// The line `--help` prints.
inline constexpr char kExitCodesHelp[] =
    "Exit codes: 0 success, 1 runtime failure, 2 usage or validation error (bad flags or values, an output that "
    "would hit an input, an existing output without --overwrite); against a daemon, 1 also a job that failed or was "
    "cancelled, 3 server unavailable or credentials refused.";

// Status codes that mean "the request was wrong" map to 2, the rest to 1.
int ExitCodeFor(const absl::Status& status);

// For the commands against a daemon: 3 for an unreachable daemon or refused
// credentials, else ExitCodeFor (the daemon's codes are abseil's).
int RemoteExitCodeFor(const absl::Status& status);

}  // namespace autoquant::cli
