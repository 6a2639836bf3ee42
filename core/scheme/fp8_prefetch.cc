#include "core/scheme/fp8_prefetch.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace {

uint64_t HostBytes(const StoredWeight& w) {
  return static_cast<uint64_t>(w.weight.defined() ? w.weight.nbytes() : 0) +
         static_cast<uint64_t>(w.weight_scale.defined() ? w.weight_scale.nbytes() : 0);
}

}  // namespace

Fp8Prefetcher::Fp8Prefetcher(std::vector<Producer> producers, uint64_t budget_bytes, int threads)
    : producers_(std::move(producers)),
      budget_(budget_bytes),
      state_(producers_.size(), State::kWaiting),
      ready_(producers_.size()) {
  for (int t = 0; t < std::max(1, threads); ++t) threads_.emplace_back([this] { Run(); });
}

Fp8Prefetcher::~Fp8Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  for (auto& t : threads_) t.join();
}

std::optional<size_t> Fp8Prefetcher::NextLocked() {
  while (!requested_.empty()) {
    const size_t k = requested_.front();
    requested_.pop_front();
    if (state_[k] == State::kWaiting) return k;
  }
  if (!failed_.ok() || (holding_ > 0 && holding_ >= budget_)) return std::nullopt;
  while (ahead_ < state_.size() && state_[ahead_] != State::kWaiting) ++ahead_;
  if (ahead_ == state_.size()) return std::nullopt;
  return ahead_;
}

void Fp8Prefetcher::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    std::optional<size_t> next;
    changed_.wait(lock, [&] { return stop_ || (next = NextLocked()).has_value() || !failed_.ok(); });
    if (stop_) return;
    if (!next) {
      if (!failed_.ok()) return;  // nothing more is produced; Take names the error
      continue;
    }
    const size_t k = *next;
    state_[k] = State::kProducing;
    Producer produce = std::move(producers_[k]);  // what it captured is released with it
    lock.unlock();
    absl::StatusOr<StoredWeight> w = TorchCall(produce, "FP8 weight for the export");
    produce = nullptr;
    lock.lock();
    if (w.ok()) {
      holding_ += HostBytes(*w);
    } else if (failed_.ok()) {
      failed_ = w.status();
    }
    ready_[k] = std::move(w);
    state_[k] = State::kReady;
    changed_.notify_all();
  }
}

absl::StatusOr<StoredWeight> Fp8Prefetcher::Take(size_t index) {
  std::unique_lock<std::mutex> lock(mu_);
  if (index >= state_.size()) {
    return absl::OutOfRangeError(absl::StrCat("FP8 weight ", index, " of ", state_.size(), " requested"));
  }
  if (state_[index] == State::kTaken) {
    return absl::FailedPreconditionError(absl::StrCat("FP8 weight ", index, " was taken before"));
  }
  if (state_[index] == State::kWaiting) {
    requested_.push_back(index);
    ahead_ = index + 1;
    changed_.notify_all();
  }
  changed_.wait(lock, [&] {
    return state_[index] == State::kReady || stop_ || (!failed_.ok() && state_[index] == State::kWaiting);
  });
  if (state_[index] != State::kReady) {
    state_[index] = State::kTaken;
    if (stop_) return absl::CancelledError("the export's FP8 producer stopped");
    return absl::Status(failed_.code(),
                        absl::StrCat("not produced: an earlier FP8 weight failed: ", failed_.message()));
  }
  state_[index] = State::kTaken;
  absl::StatusOr<StoredWeight> w = std::move(*ready_[index]);
  ready_[index].reset();
  if (w.ok()) holding_ -= HostBytes(*w);
  changed_.notify_all();
  return w;
}

}  // namespace autoquant
