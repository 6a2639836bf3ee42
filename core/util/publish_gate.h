// The hook through which whoever publishes a finished output (the rename of a
// staged directory into place) lets its caller decide whether it still may.
// The daemon's fleet mode passes one that holds the job's lease (and its
// database row lock) around the rename, so a daemon whose job was taken over
// while it was paused cannot publish over the new owner's result. Torch-free;
// core/quant and core/jobs both use it without knowing of each other.
//
//   PublishGate gate = [&](const std::function<absl::Status()>& publish) {
//     return store->WhileLeaseHeld(job.id, lease, publish);
//   };
//   RETURN_IF_ERROR(PublishThrough(gate, [&] { return staged.Commit(); }));
#pragma once

#include <functional>

#include "absl/status/status.h"

namespace autoquant {

// Runs `publish` if and only if publishing is still allowed, and returns its
// status; returns an error without running it otherwise (Aborted: the lease
// is lost). Must not run `publish` more than once.
using PublishGate = std::function<absl::Status(const std::function<absl::Status()>& publish)>;

// `publish` through `gate`, or directly when there is no gate.
inline absl::Status PublishThrough(const PublishGate& gate, const std::function<absl::Status()>& publish) {
  return gate ? gate(publish) : publish();
}

}  // namespace autoquant
