// The request executor alone: work runs on its threads, a full queue refuses
// new requests at once (but not an admitted request's next step), and Stop
// refuses what is queued, lets what runs finish, and joins; every task hears
// exactly once. The service's use of it is in autoquant_service_test.cc.
#include "server/request_executor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace autoquant {
namespace {

using std::chrono::seconds;

class RecordingObserver : public RequestExecutorObserver {
 public:
  void OnRequestQueueDepth(int64_t queued) override {
    std::lock_guard<std::mutex> lock(mu);
    depths.push_back(queued);
  }
  void OnRequestRefused(const absl::Status& why) override {
    std::lock_guard<std::mutex> lock(mu);
    refused.push_back(why.code());
  }
  std::mutex mu;
  std::vector<int64_t> depths;
  std::vector<absl::StatusCode> refused;
};

// A task that holds its thread until released, and says when it has started.
struct Blocker {
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> finished{false};
  RequestExecutor::Task Task() {
    return [this](const absl::Status& s) {
      EXPECT_TRUE(s.ok()) << s;
      started.set_value();
      released.wait();
      finished = true;
    };
  }
};

TEST(RequestExecutorTest, RunsEveryTaskOnItsOwnThreads) {
  RequestExecutor executor({.threads = 3, .max_queued = 1000});
  constexpr int kTasks = 200;
  std::atomic<int> ran{0}, on_caller{0};
  std::promise<void> all;
  const auto caller = std::this_thread::get_id();
  for (int i = 0; i < kTasks; ++i) {
    executor.Admit([&](const absl::Status& s) {
      EXPECT_TRUE(s.ok()) << s;
      if (std::this_thread::get_id() == caller) ++on_caller;
      if (++ran == kTasks) all.set_value();
    });
  }
  ASSERT_EQ(all.get_future().wait_for(seconds(30)), std::future_status::ready);
  EXPECT_EQ(on_caller.load(), 0);
  EXPECT_EQ(executor.queued(), 0);
}

TEST(RequestExecutorTest, AFullQueueRefusesNewRequestsAtOnceButNotAnAdmittedOnesNextStep) {
  RecordingObserver observer;
  RequestExecutor executor({.threads = 1, .max_queued = 2}, &observer);
  Blocker blocker;
  executor.Admit(blocker.Task());
  blocker.started.get_future().wait();  // the one thread is taken; what follows waits in the queue

  std::atomic<int> ran{0};
  auto counted = [&](const absl::Status& s) {
    EXPECT_TRUE(s.ok()) << s;
    ++ran;
  };
  executor.Admit(counted);
  executor.Admit(counted);
  EXPECT_EQ(executor.queued(), 2);

  // The third new request is refused at once, on this thread, saying the server is busy.
  std::optional<absl::Status> heard;
  std::thread::id heard_on;
  executor.Admit([&](const absl::Status& s) {
    heard = s;
    heard_on = std::this_thread::get_id();
  });
  ASSERT_TRUE(heard.has_value());
  EXPECT_TRUE(absl::IsResourceExhausted(*heard)) << *heard;
  EXPECT_EQ(heard_on, std::this_thread::get_id());
  EXPECT_NE(heard->message().find("the server is busy"), std::string::npos) << *heard;
  EXPECT_NE(heard->message().find("retry"), std::string::npos) << *heard;

  // An admitted request's next step is queued beyond the bound.
  executor.Resume(counted);
  EXPECT_EQ(executor.queued(), 3);

  blocker.release.set_value();
  for (int i = 0; i < 3000 && ran.load() < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(ran.load(), 3);
  std::lock_guard<std::mutex> lock(observer.mu);
  EXPECT_EQ(observer.refused, std::vector<absl::StatusCode>{absl::StatusCode::kResourceExhausted});
  ASSERT_FALSE(observer.depths.empty());
  EXPECT_EQ(*std::max_element(observer.depths.begin(), observer.depths.end()), 3);
  EXPECT_EQ(observer.depths.back(), 0);
}

TEST(RequestExecutorTest, StopRefusesWhatIsQueuedLetsWhatRunsFinishAndJoins) {
  RecordingObserver observer;
  RequestExecutor executor({.threads = 1, .max_queued = 10}, &observer);
  Blocker blocker;
  executor.Admit(blocker.Task());
  blocker.started.get_future().wait();

  std::mutex mu;
  std::vector<absl::Status> queued_heard;
  std::atomic<int> refused{0};
  std::promise<void> all_refused;
  for (int i = 0; i < 3; ++i) {
    executor.Admit([&](const absl::Status& s) {
      std::lock_guard<std::mutex> lock(mu);
      queued_heard.push_back(s);
      if (++refused == 3) all_refused.set_value();
    });
  }

  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    executor.Stop();
    stopped = true;
  });
  // The queued tasks hear Unavailable while the running one still holds its thread: Stop does not
  // run them.
  ASSERT_EQ(all_refused.get_future().wait_for(seconds(30)), std::future_status::ready);
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const absl::Status& s : queued_heard) {
      EXPECT_TRUE(absl::IsUnavailable(s)) << s;
      EXPECT_NE(s.message().find("shut down"), std::string::npos) << s;
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(stopped.load()) << "Stop returned while a task was still running";
  EXPECT_FALSE(blocker.finished.load());

  // Nothing new is taken once stopping, neither a new request nor a next step.
  for (bool resume : {false, true}) {
    std::optional<absl::Status> heard;
    auto task = [&](const absl::Status& s) { heard = s; };
    if (resume) {
      executor.Resume(task);
    } else {
      executor.Admit(task);
    }
    ASSERT_TRUE(heard.has_value());
    EXPECT_TRUE(absl::IsUnavailable(*heard)) << *heard;
  }

  blocker.release.set_value();
  stopper.join();
  EXPECT_TRUE(blocker.finished.load());
  EXPECT_TRUE(stopped.load());
  executor.Stop();  // again: returns at once
  std::lock_guard<std::mutex> lock(observer.mu);
  EXPECT_EQ(observer.refused.size(), 5u);
  EXPECT_EQ(observer.depths.back(), 0);
}

TEST(RequestExecutorTest, EveryTaskHearsExactlyOnceWhileClientsRaceAStop) {
  constexpr int kClients = 8, kEach = 200;
  std::atomic<int> heard{0}, ok{0}, busy{0}, unavailable{0}, other{0};
  {
    RequestExecutor executor({.threads = 2, .max_queued = 8});
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c] {
        for (int i = 0; i < kEach; ++i) {
          auto task = [&](const absl::Status& s) {
            ++heard;
            if (s.ok()) {
              ++ok;
            } else if (absl::IsResourceExhausted(s)) {
              ++busy;
            } else if (absl::IsUnavailable(s)) {
              ++unavailable;
            } else {
              ++other;
            }
          };
          if (c % 2) {
            executor.Resume(task);
          } else {
            executor.Admit(task);
          }
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    executor.Stop();
    for (auto& t : clients) t.join();
  }
  EXPECT_EQ(heard.load(), kClients * kEach);
  EXPECT_EQ(ok.load() + busy.load() + unavailable.load(), kClients * kEach);
  EXPECT_EQ(other.load(), 0);
}

}  // namespace
}  // namespace autoquant
