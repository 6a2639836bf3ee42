// Wall time since a steady_clock point, in seconds: how phases time themselves.
#pragma once

#include <chrono>

namespace autoquant {

inline double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace autoquant
