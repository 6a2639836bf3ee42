// Conversions between the wire types (autoquant.v1) and core/jobs' types: the one place where the
// wire's enums meet core's (the service and the CLI's remote commands use it). SpecFromProto refuses
// only enum values it does not know; the spec's own rules are ValidateSchemeSpec's (scheme_spec.h, which
// JobManager applies at submit) and everything about the model is the runner's Validate.
#pragma once

#include "absl/status/statusor.h"
#include "autoquant/v1/autoquant.pb.h"
#include "core/jobs/job.h"

namespace autoquant {

absl::StatusOr<JobSpec> SpecFromProto(const v1::SchemeSpec& p);
// UNSPECIFIED is the default, gradient; InvalidArgument for a value this version does not know.
absl::StatusOr<ScoreMethod> MethodFromProto(int m);
v1::ScoreMethod MethodToProto(ScoreMethod m);
// Quantization formats: UNSPECIFIED and unknown values are InvalidArgument naming the field.
absl::StatusOr<Format> FormatFromProto(int f);
v1::QuantFormat FormatToProto(Format f);
absl::StatusOr<std::vector<Format>> FormatsFromProto(const google::protobuf::RepeatedField<int>& formats);
void SpecToProto(const JobSpec& s, v1::SchemeSpec* p);
// `queue_position`: 1-based, 0 when not queued.
void JobToProto(const Job& j, int queue_position, v1::Job* p);
void LogToProto(const LogEntry& e, v1::LogLine* p);
v1::Phase PhaseToProto(std::optional<Phase> phase);
v1::JobState StateToProto(JobState s);
absl::StatusOr<JobState> StateFromProto(v1::JobState s);

}  // namespace autoquant
