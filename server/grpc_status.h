// The one mapping from absl::Status (core's errors) to grpc::Status (what
// clients see). abseil's codes follow gRPC's numbering and retry rule, so
// the code carries over unchanged and the message is kept whole.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace autoquant {

grpc::Status ToGrpcStatus(const absl::Status& s);

}  // namespace autoquant
