#include "server/stop_signals.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace autoquant {
namespace {

int g_pipe[2] = {-1, -1};

void OnStopSignal(int sig) {
  const int saved = errno;  // the interrupted thread may be between a call and its errno check
  const unsigned char byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] ssize_t n = write(g_pipe[1], &byte, 1);  // async-signal-safe; a full pipe already holds a stop
  errno = saved;
}

absl::Status OpenPipe() {
  static std::once_flag once;
  static int err = 0;
  std::call_once(once, [] {
    if (pipe2(g_pipe, O_CLOEXEC) != 0) {
      err = errno;
      return;
    }
    fcntl(g_pipe[1], F_SETFL, O_NONBLOCK);  // a signal storm never blocks a handler
  });
  if (err != 0) return absl::InternalError(absl::StrCat("pipe2 for stop signals: ", std::strerror(err)));
  return absl::OkStatus();
}

}  // namespace

absl::Status InstallStopSignalHandlers() {
  if (absl::Status s = OpenPipe(); !s.ok()) return s;
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT}) {
    if (sigaction(sig, &sa, nullptr) != 0) {
      return absl::InternalError(absl::StrCat("sigaction(", sig, "): ", std::strerror(errno)));
    }
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);  // the calling thread at least can take them
  return absl::OkStatus();
}

int WaitForStopSignal() {
  unsigned char byte = 0;
  while (true) {
    ssize_t n = read(g_pipe[0], &byte, 1);
    if (n == 1) return byte;
    if (n < 0 && errno == EINTR) continue;
    return SIGTERM;  // the pipe broke: treat as a stop rather than hang or spin
  }
}

}  // namespace autoquant
