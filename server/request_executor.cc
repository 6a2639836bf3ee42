#include "server/request_executor.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace autoquant {

RequestExecutor::RequestExecutor(RequestExecutorOptions options, RequestExecutorObserver* observer)
    : options_{.threads = std::max(options.threads, 1), .max_queued = std::max<int64_t>(options.max_queued, 1)},
      observer_(observer) {
  threads_.reserve(options_.threads);
  for (int i = 0; i < options_.threads; ++i) threads_.emplace_back([this] { Loop(); });
}

RequestExecutor::~RequestExecutor() { Stop(); }

void RequestExecutor::Admit(Task task) { Enqueue(std::move(task), /*bounded=*/true); }

void RequestExecutor::Resume(Task task) { Enqueue(std::move(task), /*bounded=*/false); }

void RequestExecutor::Enqueue(Task task, bool bounded) {
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      refused = absl::UnavailableError(
          "the server is shutting down and takes no more requests; retry against it once it is "
          "back (or another "
          "daemon of the fleet)");
    } else if (bounded && static_cast<int64_t>(queue_.size()) >= options_.max_queued) {
      refused = absl::ResourceExhaustedError(absl::StrCat("the server is busy: ", queue_.size(),
                                                          " requests are waiting for one of its ", options_.threads,
                                                          " request threads; retry shortly (with backoff)"));
    } else {
      queue_.push_back(std::move(task));
      if (observer_) observer_->OnRequestQueueDepth(static_cast<int64_t>(queue_.size()));
    }
  }
  if (!refused.ok()) return Refuse(task, refused);
  cv_.notify_one();
}

void RequestExecutor::Refuse(Task& task, const absl::Status& why) {
  if (observer_) observer_->OnRequestRefused(why);
  task(why);
}

void RequestExecutor::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  std::deque<Task> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    dropped.swap(queue_);
    if (observer_ && !dropped.empty()) observer_->OnRequestQueueDepth(0);
  }
  cv_.notify_all();
  const absl::Status why = absl::UnavailableError(
      "the server shut down before this request ran; retry against it once it is back (or another "
      "daemon of the "
      "fleet)");
  for (Task& task : dropped) Refuse(task, why);
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

int64_t RequestExecutor::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

void RequestExecutor::Loop() {
  while (true) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and Stop took what was queued
      task = std::move(queue_.front());
      queue_.pop_front();
      if (observer_) observer_->OnRequestQueueDepth(static_cast<int64_t>(queue_.size()));
    }
    task(absl::OkStatus());
  }
}

}  // namespace autoquant
