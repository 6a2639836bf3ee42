// The one absl -> gRPC status mapping: every code keeps its number and name,
// and the message reaches the client whole.
#include "server/grpc_status.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>

namespace autoquant {
namespace {

TEST(ToGrpcStatusTest, OkStaysOkWithoutAMessage) {
  grpc::Status s = ToGrpcStatus(absl::OkStatus());
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(s.error_message(), "");
}

// Spelled out by name on both sides, so that a mapping that shifted, merged or
// defaulted any code (not only a cast) would fail here.
TEST(ToGrpcStatusTest, EveryAbslCodeBecomesTheGrpcCodeOfTheSameNumber) {
  const std::pair<absl::StatusCode, grpc::StatusCode> codes[] = {
      {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
      {absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN},
      {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
      {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
      {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
      {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
      {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
      {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED},
      {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE},
      {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED},
      {absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL},
      {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
      {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
      {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
  };
  for (const auto& [absl_code, grpc_code] : codes) {
    SCOPED_TRACE(absl::StatusCodeToString(absl_code));
    grpc::Status s = ToGrpcStatus(absl::Status(absl_code, "why"));
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.error_code(), grpc_code);
    EXPECT_EQ(static_cast<int>(s.error_code()), static_cast<int>(absl_code));
    EXPECT_EQ(s.error_message(), "why");
    EXPECT_EQ(s.error_details(), "");
  }
}

// Nothing is cut, escaped or re-worded: several lines, quotes, non-ASCII text
// and a message far longer than any one line.
TEST(ToGrpcStatusTest, MessageIsKeptWhole) {
  std::string message =
      "disabled_layers[3]: pattern \"*.mlp.*\" matches no Linear\n"
      "  (patterns are fnmatch, e.g. 'language_model.layers.0.*')\n"
      "schéma: naïve ✓\t";
  message += std::string(64 * 1024, 'x');
  message += "end";
  grpc::Status s = ToGrpcStatus(absl::InvalidArgumentError(message));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), message);
}

TEST(ToGrpcStatusTest, AnErrorWithAnEmptyMessageIsStillAnError) {
  grpc::Status s = ToGrpcStatus(absl::UnavailableError(""));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(s.error_message(), "");
}

}  // namespace
}  // namespace autoquant
