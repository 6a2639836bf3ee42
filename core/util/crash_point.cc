#include "core/util/crash_point.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"

namespace autoquant {
namespace {

struct Target {
  std::string name;  // empty: no crash point armed
  long nth = 1;
  std::atomic<long> seen{0};
};

Target& Armed() {
  static Target* t = [] {
    auto* out = new Target;
    const char* env = std::getenv("AUTOQUANT_CRASH_AT");
    if (env == nullptr) return out;
    std::string spec(env);
    const size_t colon = spec.rfind(':');
    long nth = 1;
    if (colon != std::string::npos && absl::SimpleAtoi(spec.substr(colon + 1), &nth) && nth >= 1) {
      spec.resize(colon);
    } else {
      nth = 1;
    }
    out->name = spec;
    out->nth = nth;
    return out;
  }();
  return *t;
}

}  // namespace

void CrashPoint(std::string_view name) {
  Target& t = Armed();
  if (t.name.empty() || name != t.name) return;
  if (t.seen.fetch_add(1, std::memory_order_relaxed) + 1 == t.nth) ::kill(::getpid(), SIGKILL);
}

}  // namespace autoquant
