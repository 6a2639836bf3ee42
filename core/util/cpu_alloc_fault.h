// An out-of-memory injector for torch's CPU allocator: once installed, it
// makes the N-th allocation throw c10::OutOfMemoryError, as a CUDA allocation
// does when the device is full. Tests sweep N over a call (tests/alloc_fault.h);
// the daemon arms it at a named point (AUTOQUANT_OOM_AT, crash_point.h) to
// prove that an out-of-memory in a job fails that job and nothing else.
//
//   CpuAllocFault fault;   // installed as torch's CPU allocator until destroyed
//   fault.FailAt(1);       // the next allocation throws
#pragma once

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdint>

namespace autoquant {

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
  void copy_data(void* dest, const void* src, std::size_t count) const override { inner_->copy_data(dest, src, count); }
  bool is_simple_data_ptr(const c10::DataPtr& p) const override { return inner_->is_simple_data_ptr(p); }

 private:
  static constexpr uint8_t kPriority = 100;  // above the default allocator's, so the swap takes
  c10::Allocator* inner_;
  std::atomic<int64_t> count_{0};
  std::atomic<int64_t> fail_at_{0};
  std::atomic<bool> fired_{false};
};

}  // namespace autoquant
