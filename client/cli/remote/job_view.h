// How the remote commands show jobs: JSON for scripts (the API's own proto3
// JSON mapping, field names as in the .proto, enums by name), one plain line
// per job otherwise, and while waiting a progress view: on a terminal one
// line per job redrawn in place (scheme, state or phase, percent, ETA); on a
// pipe or file a plain line whenever a job's state, phase or tenth of
// progress changes.
//
// Includes protobuf: never include this from a translation unit that includes torch.
#pragma once

#include <chrono>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "autoquant/v1/autoquant.pb.h"
#include "nlohmann/json.hpp"

namespace autoquant::cli {

nlohmann::json ToJson(const google::protobuf::Message& m);
// "SUCCEEDED", "RUNNING", ...; "calibrate", "export", ... ("" for none).
std::string StateName(v1::JobState s);
std::string PhaseName(v1::Phase p);
bool IsTerminal(v1::JobState s);
// "<id>  <scheme>  <STATE>  [phase NN%]  [output dir or message]".
std::string JobLine(const v1::Job& j);

// Not thread-safe; one per wait.
class ProgressView {
 public:
  ProgressView(std::ostream& out, bool terminal) : out_(out), terminal_(terminal) {}
  // Shows `jobs` (same ids, same order, on every call).
  void Update(const std::vector<v1::Job>& jobs);

 private:
  struct Seen {
    std::chrono::steady_clock::time_point first_time;
    double first_progress = -1;
    std::string last_key;  // what a plain line was last printed for
  };
  std::string Line(const v1::Job& j, Seen& seen);

  std::ostream& out_;
  bool terminal_;
  size_t drawn_ = 0;  // lines drawn last time (terminal)
  std::map<std::string, Seen> seen_;
};

}  // namespace autoquant::cli
