// Where autoquantd's RPCs do their work: a fixed pool of threads and a
// bounded queue, so that the gRPC callback threads never block. A reactor
// checks the token on the callback thread, hands the rest (parse, store and
// file work, Finish) to the executor and returns; a stalled job store or a
// slow file then occupies executor threads, never the threads that answer
// health and accept calls.
//
//   RequestExecutor executor({.threads = 8, .max_queued = 256}, &metrics);
//   executor.Admit([reactor](const absl::Status& admitted) {
//     reactor->Finish(admitted.ok() ? DoTheWork() : ToGrpcStatus(admitted));
//   });
//   ...
//   executor.Stop();  // on drain: queued tasks hear Unavailable, running ones finish, threads
//   joined
//
// Every task is called exactly once: with OkStatus on an executor thread, or
// with the reason it will not run, so that a reactor it answers is finished
// exactly once whatever happens:
//   - ResourceExhausted ("the server is busy ..."): Admit found the queue full;
//     called at once on the caller's thread.
//   - Unavailable ("the server is shutting down ..."): submitted after Stop
//     began (called at once on the caller's thread), or still queued when it
//     began (called on Stop's thread).
// A caller that holds a lock the task takes must release it before Admit or
// Resume: a refused task runs before they return.
//
// Thread-safe. Tasks run in submission order (FIFO), several at once.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace autoquant {

// Told about the queue (metrics). Must not block or call back into the executor.
class RequestExecutorObserver {
 public:
  virtual ~RequestExecutorObserver() = default;
  // Tasks waiting for a thread (not counting those running). Called with the
  // executor's lock held, so that the values arrive in the order they held.
  virtual void OnRequestQueueDepth(int64_t queued) {}
  // A task refused: ResourceExhausted (queue full) or Unavailable (stopping).
  // Called without the executor's lock, before the task hears why.
  virtual void OnRequestRefused(const absl::Status& why) {}
};

struct RequestExecutorOptions {
  int threads = 8;           // at least 1
  int64_t max_queued = 256;  // tasks waiting beyond this are refused by Admit; at least 1
};

class RequestExecutor {
 public:
  // `status`: OkStatus to do the work, else why it will not run (see above).
  using Task = std::function<void(const absl::Status& status)>;

  // Starts the threads. `observer` (may be null) must outlive the executor.
  explicit RequestExecutor(RequestExecutorOptions options, RequestExecutorObserver* observer = nullptr);
  ~RequestExecutor();  // Stop()s

  // A new request: queued, or refused when `max_queued` tasks already wait
  // (ResourceExhausted) or once stopping (Unavailable); the task hears which.
  void Admit(Task task);
  // More work of a request already admitted (the next read of a log stream):
  // queued whatever the queue holds, so that an admitted request is never
  // left half-answered; refused only once stopping. A request keeps at most
  // one such task queued, so these are bounded by the requests in flight.
  void Resume(Task task);

  // Stops admitting; every queued task is called with Unavailable (on this
  // thread), running ones finish; returns when the threads have exited.
  // Idempotent; a second caller waits for the first. Must not be called from a task.
  void Stop();

  int64_t queued() const;

 private:
  void Enqueue(Task task, bool bounded);
  void Refuse(Task& task, const absl::Status& why);
  void Loop();

  const RequestExecutorOptions options_;
  RequestExecutorObserver* const observer_;
  std::mutex stop_mu_;  // held through Stop, so that a second Stop returns only once the threads
                        // are joined
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;  // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace autoquant
