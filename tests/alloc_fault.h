// Fault injection for torch's CPU allocator: makes the N-th allocation throw
// c10::OutOfMemoryError, as a CUDA allocation does when the device is full.
// Sweeping N over a call proves that out-of-memory at every allocation it
// makes comes back as a Status instead of escaping as an exception.
//
//   ExpectOomIsAStatusAtEveryAllocation([&] { return LoadScheme(ckpt, torch::kCPU, torch::kFloat32).status(); });
#pragma once

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace autoquant::testing {

class CpuAllocFault : public c10::Allocator {
 public:
  // Installs itself as torch's CPU allocator until destroyed.
  CpuAllocFault() : inner_(c10::GetCPUAllocator()) { c10::SetCPUAllocator(this, kPriority); }
  ~CpuAllocFault() override { c10::SetCPUAllocator(inner_, kPriority); }
  CpuAllocFault(const CpuAllocFault&) = delete;
  CpuAllocFault& operator=(const CpuAllocFault&) = delete;

  // From now on, the n-th allocation (1-based) throws; 0: none does.
  void FailAt(int64_t n) {
    count_ = 0;
    fired_ = false;
    fail_at_ = n;
  }
  int64_t count() const { return count_; }
  bool fired() const { return fired_; }

  c10::DataPtr allocate(size_t n) override {
    if (++count_ == fail_at_) {
      fired_ = true;
      TORCH_CHECK_WITH(OutOfMemoryError, false, "injected out of memory at allocation ", fail_at_.load(), " (", n,
                       " bytes)");
    }
    return inner_->allocate(n);
  }
  c10::DeleterFnPtr raw_deleter() const override { return inner_->raw_deleter(); }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    inner_->copy_data(dest, src, count);
  }
  bool is_simple_data_ptr(const c10::DataPtr& p) const override { return inner_->is_simple_data_ptr(p); }

 private:
  static constexpr uint8_t kPriority = 100;  // above the default allocator's, so the swap takes
  c10::Allocator* inner_;
  std::atomic<int64_t> count_{0};
  std::atomic<int64_t> fail_at_{0};
  std::atomic<bool> fired_{false};
};

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
