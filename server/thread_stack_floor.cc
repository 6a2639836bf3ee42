// Why this file exists: Debian's civetweb (under prometheus-cpp's Exposer)
// creates its threads with 100 KiB stacks, and glibc carves each thread's
// static TLS out of its stack. LibTorch's CUDA build loads cuBLASLt, whose
// static TLS alone is ~94 KiB, so pthread_create fails with EINVAL and
// /metrics never starts ("null context when constructing CivetServer").
// Defining pthread_attr_setstacksize in the executable interposes it for
// every library in the process and raises requests below 1 MiB to 1 MiB;
// larger requests pass through unchanged.
#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <cstddef>

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  using Fn = int (*)(pthread_attr_t*, size_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  constexpr size_t kFloor = size_t{1} << 20;
  return real(attr, std::max(size, kFloor));
}
