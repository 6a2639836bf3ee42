// autoquantd's life: check flags, open the store and finish what a previous
// process left, listen (health NOT_SERVING), load the model and calibration
// set onto the device, warm up, serve (health SERVING), and on SIGTERM or
// SIGINT drain (health NOT_SERVING, the running job re-queued) and exit 0.
#pragma once

#include "server/daemon_options.h"

namespace autoquant {

// The process exit code: 0 after a clean shutdown, 2 for bad flags, 1 for a
// failure to start (unreadable store, model or calibration set, port in use).
int RunDaemon(const DaemonOptions& options);

}  // namespace autoquant
