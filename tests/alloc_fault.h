// Out-of-memory sweeps over torch's CPU allocator (core/util/cpu_alloc_fault.h
// makes the N-th allocation throw c10::OutOfMemoryError, as a CUDA allocation
// does when the device is full). Sweeping N over a call proves that
// out-of-memory at every allocation it makes comes back as a Status instead of
// escaping as an exception.
//
//   ExpectOomIsAStatusAtEveryAllocation([&] { return LoadScheme(ckpt, torch::kCPU, torch::kFloat32).status(); });
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/util/cpu_alloc_fault.h"
#include "gtest/gtest.h"

namespace autoquant::testing {

using autoquant::CpuAllocFault;

// Counts the CPU allocations of one clean run of `f` (which must succeed),
// then reruns it failing allocation k for every k in `ks(total)`; each run
// must return (never throw) and, when the fault fired, either succeed (torch
// recovered by itself: oneDNN, for one, falls back when its scratch
// allocation fails) or return ResourceExhausted. Returns how many runs
// returned ResourceExhausted.
inline int ExpectOomIsAStatusAt(const std::function<absl::Status()>& f,
                                const std::function<std::vector<int64_t>(int64_t total)>& ks) {
  CpuAllocFault fault;
  fault.FailAt(0);
  absl::Status clean = f();
  EXPECT_TRUE(clean.ok()) << clean;
  const int64_t total = fault.count();
  EXPECT_GT(total, 0);
  int fired = 0;
  for (int64_t k : ks(total)) {
    fault.FailAt(k);
    absl::Status s;
    try {
      s = f();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "allocation " << k << " of " << total << ": exception escaped: " << e.what();
      continue;
    }
    if (!fault.fired() || s.ok()) continue;
    ++fired;
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << "allocation " << k << " of " << total << ": " << s;
  }
  return fired;
}

// Every allocation from 1 to the clean run's count.
inline int ExpectOomIsAStatusAtEveryAllocation(const std::function<absl::Status()>& f) {
  return ExpectOomIsAStatusAt(f, [](int64_t total) {
    std::vector<int64_t> ks;
    for (int64_t k = 1; k <= total; ++k) ks.push_back(k);
    return ks;
  });
}

}  // namespace autoquant::testing
