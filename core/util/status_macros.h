// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status and absl::StatusOr.
//
// Debian's abseil (20220623) ships no status macros, so these two stand in.
//
//   RETURN_IF_ERROR(WriteHeader(out));
//   ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define AQ_STATUS_CONCAT_INNER_(a, b) a##b
#define AQ_STATUS_CONCAT_(a, b) AQ_STATUS_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                \
  do {                                       \
    ::absl::Status aq_status_ = (expr);      \
    if (!aq_status_.ok()) return aq_status_; \
  } while (0)

#define AQ_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return std::move(tmp).status();  \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) AQ_ASSIGN_OR_RETURN_IMPL_(AQ_STATUS_CONCAT_(aq_statusor_, __LINE__), lhs, expr)
