// Helpers shared by the C++ tests.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "gtest/gtest.h"

namespace autoquant::testing {

// A fresh directory for one test, under $AUTOQUANT_TEST_TMP (set by CTest to
// the build dir) or the system temp dir.
inline std::filesystem::path TempDir() {
  const char* root = std::getenv("AUTOQUANT_TEST_TMP");
  std::filesystem::path base = root ? root : std::filesystem::temp_directory_path();
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir =
      base / (std::string(info->test_suite_name()) + "." + info->name() + "." + std::to_string(std::random_device{}()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace autoquant::testing

#define ASSERT_OK(expr)               \
  do {                                \
    auto aq_s_ = (expr);              \
    ASSERT_TRUE(aq_s_.ok()) << aq_s_; \
  } while (0)

#define ASSERT_OK_AND_ASSIGN(lhs, expr)                                                              \
  auto AQ_TEST_CONCAT_(aq_or_, __LINE__) = (expr);                                                   \
  ASSERT_TRUE(AQ_TEST_CONCAT_(aq_or_, __LINE__).ok()) << AQ_TEST_CONCAT_(aq_or_, __LINE__).status(); \
  lhs = std::move(AQ_TEST_CONCAT_(aq_or_, __LINE__)).value()
#define AQ_TEST_CONCAT_INNER_(a, b) a##b
#define AQ_TEST_CONCAT_(a, b) AQ_TEST_CONCAT_INNER_(a, b)
