// FP8 weights of a standalone export produced ahead of the writer's threads,
// in the plan's order, on one background thread.
//
// On a GPU, quantizing a weight and copying its FP8 bytes back takes well under
// a millisecond alone; from the writer's eight threads it waited behind their
// pwrite calls (each thread produced, then hashed, then wrote), and producing
// became a third of the threads' time. One thread running ahead keeps the
// writers writing. Production pauses while the weights produced and not yet
// taken hold `budget_bytes` of host memory or more.
//
//   Fp8Prefetcher p(std::move(producers), 512 << 20);  // starts at once
//   ASSIGN_OR_RETURN(StoredFp8Weight w, p.Take(k));     // waits for weight k
//
// Items are produced in index order and stop at the first error, which Take
// returns for that item (later items say that an earlier one failed).
// Destruction stops the thread after the item it is producing. Take is
// thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/fp8_storage.h"

namespace autoquant {

class Fp8Prefetcher {
 public:
  using Producer = std::function<absl::StatusOr<StoredFp8Weight>()>;

  Fp8Prefetcher(std::vector<Producer> producers, uint64_t budget_bytes);
  ~Fp8Prefetcher();
  Fp8Prefetcher(const Fp8Prefetcher&) = delete;
  Fp8Prefetcher& operator=(const Fp8Prefetcher&) = delete;

  // Weight `index`, once produced. OutOfRange for an index past the end,
  // FailedPrecondition when it was taken before.
  absl::StatusOr<StoredFp8Weight> Take(size_t index);

 private:
  void Run();

  std::vector<Producer> producers_;
  const uint64_t budget_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::optional<absl::StatusOr<StoredFp8Weight>>> ready_;  // produced, not yet taken
  std::vector<bool> taken_;
  size_t produced_ = 0;     // items [0, produced_) are done (or failed)
  uint64_t holding_ = 0;    // bytes of produced items not yet taken
  absl::Status failed_;     // the first error
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace autoquant
