// SIGTERM/SIGINT as an event one thread waits for. A handler that writes to a
// self-pipe, not sigwait alone: on the GPU machine the CUDA runtime starts
// threads whose signal mask lets SIGTERM through, so a blocked-everywhere
// plus sigwait scheme lost the signal to the default action (exit by signal
// 15, no drain). The handler runs in whichever thread the kernel picks.
#pragma once

#include "absl/status/status.h"

namespace autoquant {

// Installs the handlers (again after loading libraries that may have replaced
// them; calling twice is harmless). Errors name the failing call.
absl::Status InstallStopSignalHandlers();

// Blocks until SIGTERM or SIGINT arrived (also one that arrived before the
// call); returns its number.
int WaitForStopSignal();

}  // namespace autoquant
