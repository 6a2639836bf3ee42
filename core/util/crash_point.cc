#include "core/util/crash_point.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "core/util/cpu_alloc_fault.h"

namespace autoquant {
namespace {

// One armed point: "NAME[:N]" from an environment variable.
struct Target {
  std::string name;  // empty: not armed
  long nth = 1;
  std::atomic<long> seen{0};

  explicit Target(const char* env) {
    const char* value = std::getenv(env);
    if (value == nullptr) return;
    std::string spec(value);
    const size_t colon = spec.rfind(':');
    if (colon != std::string::npos && absl::SimpleAtoi(spec.substr(colon + 1), &nth) && nth >= 1) {
      spec.resize(colon);
    } else {
      nth = 1;
    }
    name = spec;
  }
  bool Hit(std::string_view point) {
    return !name.empty() && point == name && seen.fetch_add(1, std::memory_order_relaxed) + 1 == nth;
  }
};

struct Points {
  Target crash{"AUTOQUANT_CRASH_AT"};
  // SIGSTOP pauses the process instead (docs in crash_point.h).
  int crash_signal = [] {
    const char* sig = std::getenv("AUTOQUANT_CRASH_SIGNAL");
    return sig != nullptr && (std::string(sig) == "SIGSTOP" || std::string(sig) == "STOP") ? SIGSTOP : SIGKILL;
  }();
  Target oom{"AUTOQUANT_OOM_AT"};
  // Installed only when an out-of-memory is armed, and never removed: tensors allocated through it
  // may outlive any scope.
  CpuAllocFault* allocator = oom.name.empty() ? nullptr : new CpuAllocFault;
};

Points& Armed() {
  static Points* p = new Points;
  return *p;
}

}  // namespace

void CrashPoint(std::string_view name) {
  Points& p = Armed();
  if (p.crash.Hit(name)) ::kill(::getpid(), p.crash_signal);
  if (p.oom.Hit(name)) p.allocator->FailAt(1);
}

}  // namespace autoquant
