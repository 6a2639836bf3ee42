// Integers from untrusted JSON (config.json, stored job specs, cached baselines).
//
// nlohmann's get<int>() converts a floating-point number with a plain C++ cast,
// which is undefined behaviour when the value is out of the target's range (1e30),
// and it silently truncates 2.5 and wraps 2^40 into an int. JsonInt<T> accepts
// only integer numbers that fit T and otherwise throws nlohmann's own exceptions
// (type_error 302 for a non-integer, out_of_range 406 for a value outside T), so
// the callers' existing `catch (const json::exception&)` turns them into a Status.
//
//   s.calib_steps = JsonInt<int>(j.at("calib_steps"));
//   qg.linear_index = JsonInts<size_t>(g.at("linears"));
//
// Found by fuzzing (tests/fuzz); header-only, torch-free.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "nlohmann/json.hpp"

namespace autoquant {

template <typename T>
T JsonInt(const nlohmann::json& v) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
  if (!v.is_number_integer()) {
    throw nlohmann::json::type_error::create(
        302, std::string("type must be an integer number, but is ") + v.type_name(), &v);
  }
  bool fits;
  if (v.is_number_unsigned()) {
    fits = v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  } else {
    const int64_t i = v.get<int64_t>();
    fits = std::is_signed_v<T> ? (i >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                                  i <= static_cast<int64_t>(std::numeric_limits<T>::max()))
                               : i >= 0;  // a non-negative int64 fits every unsigned type we use (>= 32 bits)
  }
  if (!fits) throw nlohmann::json::out_of_range::create(406, "integer " + v.dump() + " is out of range", &v);
  return v.get<T>();
}

template <typename T>
std::vector<T> JsonInts(const nlohmann::json& v) {
  if (!v.is_array()) {
    throw nlohmann::json::type_error::create(302, std::string("type must be array, but is ") + v.type_name(), &v);
  }
  std::vector<T> out;
  out.reserve(v.size());
  for (const auto& e : v) out.push_back(JsonInt<T>(e));
  return out;
}

}  // namespace autoquant
