// Wall time since a steady_clock point, in seconds: how phases time themselves.
#pragma once

#include <chrono>

namespace autoquant {

inline double SecondsBetween(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

inline double Seconds(std::chrono::steady_clock::time_point since) {
  return SecondsBetween(since, std::chrono::steady_clock::now());
}

}  // namespace autoquant
