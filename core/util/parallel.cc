#include "core/util/parallel.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace autoquant {

int DefaultParallelism() {
  const unsigned hw = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp(hw, 1u, 16u));
}

absl::Status ParallelFor(size_t n, const std::function<absl::Status(size_t)>& fn, int threads) {
  if (n == 0) return absl::OkStatus();
  const size_t want = std::min(n, static_cast<size_t>(threads > 0 ? threads : DefaultParallelism()));
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  size_t failed_index = n;
  absl::Status failure;
  auto work = [&] {
    while (!failed.load(std::memory_order_relaxed)) {
      const size_t i = next.fetch_add(1);
      if (i >= n) return;
      absl::Status s = fn(i);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (i < failed_index) {
          failed_index = i;
          failure = std::move(s);
        }
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < want; ++t) {
    try {
      pool.emplace_back(work);
    } catch (const std::system_error&) {
      break;  // no more threads to be had: this one and those started share the work
    }
  }
  work();
  for (auto& t : pool) t.join();
  return failure;
}

}  // namespace autoquant
