// Ctrl-C / SIGTERM as a cancel request for long commands.
//
// With the default action a signal kills the process mid-export and leaves
// its staging directory behind; with this handler the first SIGINT or SIGTERM
// sets a flag the engine checks between batches, groups and shards, so the
// command stops, removes its staging directory and exits 1. A second signal
// restores the default action and re-raises it, so a stuck command can still
// be killed.
//
//   const std::atomic<bool>* cancel = InstallInterruptHandler();
//   engine->RunScheme(request, progress, cancel);
#pragma once

#include <atomic>

namespace autoquant::cli {

// Idempotent; returns the flag the handler sets.
const std::atomic<bool>* InstallInterruptHandler();

}  // namespace autoquant::cli
