#include "client/cli/remote/job_view.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/json_util.h"

namespace autoquant::cli {
namespace {

std::string Percent(double progress) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%3.0f%%", 100 * std::clamp(progress, 0.0, 1.0));
  return buf;
}

std::string Duration(double seconds) {
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, s % 3600 / 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lds", s);
  }
  return buf;
}

}  // namespace

nlohmann::json ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  std::string text;
  (void)google::protobuf::util::MessageToJsonString(m, &text, opts);
  return nlohmann::json::parse(text);
}

std::string StateName(v1::JobState s) { return std::string(absl::StripPrefix(v1::JobState_Name(s), "JOB_STATE_")); }

std::string PhaseName(v1::Phase p) {
  if (p == v1::PHASE_UNSPECIFIED) return "";
  return absl::AsciiStrToLower(absl::StripPrefix(v1::Phase_Name(p), "PHASE_"));
}

bool IsTerminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

std::string JobLine(const v1::Job& j) {
  std::string line = absl::StrCat(j.id(), "  ", j.scheme(), "  ", StateName(j.state()));
  if (j.state() == v1::JOB_STATE_RUNNING)
    absl::StrAppend(&line, "  ", PhaseName(j.phase()), " ", Percent(j.progress()));
  if (j.state() == v1::JOB_STATE_QUEUED && j.queue_position() > 0) {
    absl::StrAppend(&line, "  position ", j.queue_position());
  }
  if (j.state() == v1::JOB_STATE_SUCCEEDED) {
    absl::StrAppend(&line, "  ", j.result().output_dir(), "  ", j.result().groups_quantized(), "/",
                    j.result().groups_total(), " groups, ", j.result().effective_bits(), " bits");
  } else if (!j.message().empty()) {
    absl::StrAppend(&line, "  ", j.message());
  }
  return line;
}

std::string ProgressView::Line(const v1::Job& j, Seen& seen) {
  if (j.state() != v1::JOB_STATE_RUNNING) return JobLine(j);
  const auto now = std::chrono::steady_clock::now();
  if (seen.first_progress < 0) {
    seen.first_time = now;
    seen.first_progress = j.progress();
  }
  std::string line = absl::StrCat(j.scheme(), "  ", PhaseName(j.phase()), "  ", Percent(j.progress()));
  // ETA from what this client watched (no clock shared with the daemon is assumed).
  const double done = j.progress() - seen.first_progress;
  const double elapsed = std::chrono::duration<double>(now - seen.first_time).count();
  if (done > 0.01 && elapsed > 1) {
    absl::StrAppend(&line, "  ETA ", Duration(elapsed * (1 - j.progress()) / done));
  }
  return line;
}

void ProgressView::Update(const std::vector<v1::Job>& jobs) {
  if (terminal_) {
    // Back to the first line drawn last time, then redraw every line in place.
    if (drawn_ > 0) out_ << "\x1b[" << drawn_ << "A";
    for (const v1::Job& j : jobs) out_ << "\r\x1b[2K" << Line(j, seen_[j.id()]) << "\n";
    drawn_ = jobs.size();
    out_.flush();
    return;
  }
  for (const v1::Job& j : jobs) {
    Seen& seen = seen_[j.id()];
    const std::string key = absl::StrCat(j.state(), "/", j.phase(), "/", std::floor(j.progress() * 10));
    if (key == seen.last_key) continue;
    seen.last_key = key;
    out_ << Line(j, seen) << "\n";
  }
  out_.flush();
}

}  // namespace autoquant::cli
