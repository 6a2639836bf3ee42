#include "core/quant/fp8_prefetch.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace {

uint64_t HostBytes(const StoredFp8Weight& w) {
  return static_cast<uint64_t>(w.weight.defined() ? w.weight.nbytes() : 0) +
         static_cast<uint64_t>(w.weight_scale.defined() ? w.weight_scale.nbytes() : 0);
}

}  // namespace

Fp8Prefetcher::Fp8Prefetcher(std::vector<Producer> producers, uint64_t budget_bytes)
    : producers_(std::move(producers)),
      budget_(budget_bytes),
      ready_(producers_.size()),
      taken_(producers_.size(), false) {
  thread_ = std::thread([this] { Run(); });
}

Fp8Prefetcher::~Fp8Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void Fp8Prefetcher::Run() {
  for (size_t k = 0; k < producers_.size(); ++k) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [&] { return stop_ || holding_ == 0 || holding_ < budget_; });
      if (stop_) return;
    }
    absl::StatusOr<StoredFp8Weight> w = TorchCall(producers_[k], "FP8 weight for the export");
    producers_[k] = nullptr;  // what it captured (a resident or mapped weight) is no longer needed
    {
      std::lock_guard<std::mutex> lock(mu_);
      const bool ok = w.ok();
      if (ok) holding_ += HostBytes(*w);
      if (!ok) failed_ = w.status();
      ready_[k] = std::move(w);
      produced_ = k + 1;
      changed_.notify_all();
      if (!ok) return;
    }
  }
}

absl::StatusOr<StoredFp8Weight> Fp8Prefetcher::Take(size_t index) {
  std::unique_lock<std::mutex> lock(mu_);
  if (index >= taken_.size()) {
    return absl::OutOfRangeError(absl::StrCat("FP8 weight ", index, " of ", taken_.size(), " requested"));
  }
  if (taken_[index]) return absl::FailedPreconditionError(absl::StrCat("FP8 weight ", index, " was taken before"));
  changed_.wait(lock, [&] { return produced_ > index || !failed_.ok() || stop_; });
  taken_[index] = true;
  if (produced_ <= index) {
    if (stop_) return absl::CancelledError("the export's FP8 producer stopped");
    return absl::Status(failed_.code(),
                        absl::StrCat("not produced: an earlier FP8 weight failed: ", failed_.message()));
  }
  absl::StatusOr<StoredFp8Weight> w = std::move(*ready_[index]);
  ready_[index].reset();
  if (w.ok()) holding_ -= HostBytes(*w);
  changed_.notify_all();
  return w;
}

}  // namespace autoquant
