// FP8 weights of a standalone export, produced on a few background threads
// for the writer's threads.
//
// On a GPU, quantizing a weight and copying its FP8 bytes back takes well under
// a millisecond alone; done by each of the writer's eight threads between its
// writes, it waited behind the others' CUDA calls and writes, and producing
// took a third of the threads' time. Here `threads` threads produce (each on
// a quantizing stream of its own): first the weights a writer asked for and
// waits on (Take), in the order asked; between
// requests it runs ahead from the last weight asked for, while the weights
// produced and not yet taken hold less than `budget_bytes` of host memory.
// Requested weights are produced whatever the budget, so writers working on
// different parts of the plan never wait on each other's weights.
//
//   Fp8Prefetcher p(std::move(producers), 512 << 20, 4);  // starts at once
//   ASSIGN_OR_RETURN(StoredWeight w, p.Take(k));     // waits for weight k
//
// After a producer fails, Take returns that error for its weight and names it
// for every weight not produced yet. Destruction stops the threads after the
// weights they are producing. Take is thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "core/scheme/fp8_storage.h"

namespace autoquant {

class Fp8Prefetcher {
 public:
  using Producer = std::function<absl::StatusOr<StoredWeight>()>;

  Fp8Prefetcher(std::vector<Producer> producers, uint64_t budget_bytes, int threads = 1);
  ~Fp8Prefetcher();
  Fp8Prefetcher(const Fp8Prefetcher&) = delete;
  Fp8Prefetcher& operator=(const Fp8Prefetcher&) = delete;

  // Weight `index`, once produced. OutOfRange for an index past the end,
  // FailedPrecondition when it was taken before.
  absl::StatusOr<StoredWeight> Take(size_t index);

 private:
  enum class State { kWaiting, kProducing, kReady, kTaken };
  void Run();
  // The next weight to produce, or none for now. Requires mu_.
  std::optional<size_t> NextLocked();

  std::vector<Producer> producers_;
  const uint64_t budget_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<State> state_;
  std::vector<std::optional<absl::StatusOr<StoredWeight>>> ready_;
  std::deque<size_t> requested_;  // asked for by Take before being produced, in that order
  size_t ahead_ = 0;              // where running ahead continues: after the last weight asked for
  uint64_t holding_ = 0;          // bytes of weights produced and not yet taken
  absl::Status failed_;           // the first error
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace autoquant
