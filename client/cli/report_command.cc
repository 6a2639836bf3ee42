#include "client/cli/report_command.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/remote/remote_commands.h"
#include "core/eval/report.h"
#include "core/util/file_util.h"
#include "core/util/path_guard.h"
#include "core/util/status_macros.h"

extern char** environ;

namespace autoquant::cli {

namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

constexpr char kPlotModule[] = "autoquant_client.report_plot";
constexpr char kInstallHint[] =
    "install the Python client with its plot extra (`pip install './client/python[plot]'` from "
    "the autoquant repository, or set AUTOQUANT_PYTHON to a Python that has it), or pass --no-plot";

// The scheme directory an argument names: a directory as it is, a job id through the resolver.
absl::StatusOr<fs::path> ResolveInput(const std::string& arg, const JobDirResolver& resolve_job) {
  std::error_code ec;
  if (fs::is_directory(arg, ec)) return fs::path(arg);
  if (fs::exists(arg, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(arg, " is not a scheme directory"));
  }
  if (arg.find('/') != std::string::npos) {
    return absl::NotFoundError(absl::StrCat("no scheme directory ", arg));
  }
  if (resolve_job) return resolve_job(arg);
  return absl::InvalidArgumentError(
      absl::StrCat("'", arg,
                   "' is not a directory, and no daemon is set up to look a job id up; pass the scheme's "
                   "directory (the job's output directory, shown by `autoquant status ",
                   arg, "`)"));
}

// An existing report file is ours if it carries the report format's mark.
absl::Status RecogniseReportFile(const fs::path& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const std::string name = path.filename().string();
  bool ours = false;
  if (name == "report.json") {
    nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    ours = j.is_object() && j.value("format", "") == kReportFormat;
  } else if (name == "report.md") {
    ours = absl::StartsWith(text, absl::StrCat("<!-- ", kReportFormat, " -->"));
  } else {
    // report_plot.py writes the format into the PNG's text metadata.
    ours = absl::StartsWith(text, "\x89PNG") && absl::StrContains(text, kReportFormat);
  }
  if (ours) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(path.string(), " was not written by `autoquant report`"));
}

// Runs `argv` with this process's stdio and waits; its exit status, or -1 with `error` set.
int RunAndWait(const std::vector<std::string>& argv, std::string* error) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ);
  if (rc != 0) {
    *error = absl::StrCat("cannot run ", argv[0], ": ", std::strerror(rc));
    return -1;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      *error = absl::StrCat("waiting for ", argv[0], ": ", std::strerror(errno));
      return -1;
    }
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  *error = absl::StrCat(argv[0], " was killed by signal ", WTERMSIG(status));
  return -1;
}

absl::Status DrawPlot(const std::string& python, const fs::path& json, const fs::path& png) {
  std::string py = python;
  if (py.empty()) {
    const char* env = std::getenv("AUTOQUANT_PYTHON");
    py = env != nullptr && *env != '\0' ? env : "python3";
  }
  std::string error;
  const int rc = RunAndWait({py, "-m", kPlotModule, json.string(), png.string()}, &error);
  if (rc == 0) return absl::OkStatus();
  if (error.empty()) error = absl::StrCat("`", py, " -m ", kPlotModule, "` exited with status ", rc);
  return absl::FailedPreconditionError(absl::StrCat("report.json and report.md are written to ",
                                                    json.parent_path().string(), ", but drawing report.png failed (",
                                                    error, "; its own message, if any, is above): ", kInstallHint));
}

// The findings worth a line on stderr; all of them are in report.md.
void LogFindings(const ojson& report, std::ostream& log) {
  const ojson& f = report["findings"];
  for (const char* key : {"identical_schemes", "mixed_inputs", "non_finite_generation"}) {
    for (const ojson& item : f[key]) {
      log << "autoquant: warning: " << item.value("message", "") << "\n";
    }
  }
  int within_noise = 0;
  for (const ojson& item : f["inversions"]) {
    if (item.value("within_noise", false)) {
      ++within_noise;
    } else {
      log << "autoquant: warning: inversion beyond noise: " << item.value("message", "") << "\n";
    }
  }
  if (within_noise > 0) {
    log << "autoquant: note: " << within_noise
        << " inversion(s) within noise (more coverage, slightly less degradation; listed in "
           "report.md)\n";
  }
}

}  // namespace

absl::Status RunReport(const ReportCommandOptions& o, std::ostream& out, std::ostream& log) {
  if (o.out.empty()) return absl::InvalidArgumentError("--out: an output directory is required");
  std::vector<fs::path> dirs;
  for (const std::string& arg : o.inputs) {
    ASSIGN_OR_RETURN(fs::path dir, ResolveInput(arg, o.resolve_job));
    dirs.push_back(std::move(dir));
  }
  // Every scheme's problem at once: a sweep often has several schemes not yet evaluated.
  std::vector<ReportPoint> points;
  std::vector<std::string> errors;
  absl::StatusCode first_error = absl::StatusCode::kOk;
  for (const fs::path& dir : dirs) {
    absl::StatusOr<ReportPoint> p = ReadReportPoint(dir);
    if (p.ok()) {
      points.push_back(*std::move(p));
      continue;
    }
    if (first_error == absl::StatusCode::kOk) first_error = p.status().code();
    errors.emplace_back(p.status().message());
  }
  if (!errors.empty()) return absl::Status(first_error, absl::StrJoin(errors, "\n"));
  ASSIGN_OR_RETURN(ojson report, BuildReport(std::move(points), {.allow_mixed_inputs = o.allow_mixed_inputs}));

  // Checked before anything is written: the report goes next to the schemes, never into them.
  const fs::path out_dir(o.out);
  const fs::path json_path = out_dir / "report.json", md_path = out_dir / "report.md",
                 png_path = out_dir / "report.png";
  std::vector<ProtectedInput> inputs;
  for (const fs::path& d : dirs) inputs.push_back({d, "a scheme directory"});
  for (const fs::path& p : {json_path, md_path, png_path}) {
    RETURN_IF_ERROR(CheckOutputPath({.path = p,
                                     .kind = OutputKind::kFile,
                                     .overwrite = o.overwrite,
                                     .what = "--out",
                                     .is_ours = RecogniseReportFile},
                                    inputs));
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return ErrnoStatus(ec.value(), "creating --out", out_dir);
  // With --no-plot, a picture of an earlier report must not sit beside this one.
  if (o.no_plot && fs::exists(png_path, ec) && !fs::remove(png_path, ec)) {
    return ErrnoStatus(ec.value(), "removing the earlier report's", png_path);
  }
  RETURN_IF_ERROR(WriteFileAtomic(json_path, report.dump(2) + "\n"));
  RETURN_IF_ERROR(WriteFileAtomic(md_path, ReportMarkdown(report)));
  out << json_path.string() << "\n" << md_path.string() << "\n";
  LogFindings(report, log);
  if (!o.no_plot) {
    out.flush();
    RETURN_IF_ERROR(DrawPlot(o.python, json_path, png_path));
    out << png_path.string() << "\n";
  }
  const ojson& identical = report["findings"]["identical_schemes"];
  if (!identical.empty()) {
    std::vector<std::string> groups;
    for (const ojson& g : identical) {
      groups.push_back(absl::StrJoin(g["schemes"].get<std::vector<std::string>>(), " = "));
    }
    // A failed sweep, not a bad request: exit 1, as `autoquant diff` does.
    return absl::DataLossError(absl::StrCat("the report is written, but some schemes are the same model (",
                                            absl::StrJoin(groups, "; "), "): the sweep's points are not distinct; see ",
                                            md_path.string()));
  }
  return absl::OkStatus();
}

void AddReportCommand(CLI::App& app, absl::Status* status, bool* asked_daemon) {
  auto o = std::make_shared<ReportCommandOptions>();
  CLI::App* cmd =
      app.add_subcommand("report",
                         "The coverage trade-off of evaluated schemes: report.json, report.md and report.png "
                         "(KL, logit MSE and perplexity delta against coverage and effective bits)");
  cmd->add_option("schemes", o->inputs, "evaluated scheme directories (each holding layer-sensitivity/evaluation.json)")
      ->required()
      ->expected(1, -1);
  cmd->add_option("--out", o->out, "directory for report.json, report.md and report.png")->required();
  cmd->add_flag("--no-plot", o->no_plot,
                "write report.json and report.md only (report.png needs Python with matplotlib: "
                "pip install './client/python[plot]')");
  cmd->add_flag("--allow-mixed-inputs", o->allow_mixed_inputs,
                "report schemes evaluated on different eval sets or base models together (listed "
                "as a finding; their numbers are not compared)");
  cmd->add_flag("--overwrite", o->overwrite, "replace an earlier report in --out");
  cmd->footer(
      "Exit 1 also when two schemes are the same model (equal tensor digests or per-sample "
      "numbers), after writing the report; exit 2 when a scheme has no evaluation.json or the "
      "plot cannot be drawn (report.json and report.md are written by then).");
  cmd->add_option("--server", o->server,
                  "daemon to ask for job ids' output directories (else $AUTOQUANT_SERVER, else "
                  "127.0.0.1:50051); the directories must be readable here (a shared models volume)");
  o->resolve_job = [o, asked_daemon](const std::string& job_id) -> absl::StatusOr<fs::path> {
    *asked_daemon = true;
    ASSIGN_OR_RETURN(std::string dir, RemoteJobOutputDir(o->server, job_id));
    return fs::path(dir);
  };
  cmd->callback([o, status] { *status = RunReport(*o, std::cout, std::cerr); });
}

}  // namespace autoquant::cli
