// Calibration and gradient scoring, timed per batch with the custom CUDA
// kernels on and off in one process run (the A/B that issue 13 asks for:
// ratios measured in the same run), plus a plain forward at the same batch,
// and optionally a Kineto profile of one batch of each pass (a Chrome trace
// and a per-kernel table). Prints one JSON object.
//
//   aq_baseline_bench --model DIR --calib FILE [--device cuda] [--batch 4] [--steps 8]
//                     [--profile-dir DIR] [--variants on,off] [--graph-layers 0,12,24,36]
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <numeric>
#include <regex>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/engine/engine.h"
#include "core/io/checkpoint.h"
#include "core/kernels/kernels.h"
#include "core/model/device.h"
#include "core/model/device_memory.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "core/quant/baseline.h"
#include "core/quant/groups.h"
#include "core/quant/sensitivity.h"
#include "core/util/allocator_env.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"
#include "nlohmann/json.hpp"

namespace autoquant {
namespace {

namespace prof = torch::autograd::profiler;

struct Options {
  std::string model, calib, device = "cuda", profile_dir, variants = "on,off", graph_layers = "0";
  int batch = 4, steps = 8;
};

void Sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

double Ms(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Kernel name -> a coarse class, for the summary.
std::string KernelClass(const std::string& n) {
  static const std::vector<std::pair<std::regex, std::string>> kClasses = {
      {std::regex("gemm|cutlass|sm90_xmma|nvjet|cublas|matmul|Gemm", std::regex::icase), "gemm"},
      {std::regex("flash|fmha|attention|sdpa", std::regex::icase), "attention"},
      {std::regex("autoquant::kernels"), "autoquant_fused"},
      {std::regex("reduce|Reduce", std::regex::icase), "reduce"},
      {std::regex("elementwise|vectorized|unrolled|Elementwise", std::regex::icase), "elementwise"},
      {std::regex("[Cc]opy|cat|Cat", std::regex::icase), "copy_cat"},
  };
  for (const auto& [re, c] : kClasses) {
    if (std::regex_search(n, re)) return c;
  }
  return "other";
}

// Runs fn under the Kineto profiler; writes the Chrome trace to `trace` and returns per-kernel totals.
template <typename Fn>
absl::StatusOr<nlohmann::ordered_json> Profile(const torch::Device& device, const std::string& trace, Fn&& fn) {
  prof::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  std::set<torch::profiler::impl::ActivityType> acts{torch::profiler::impl::ActivityType::CPU,
                                                     torch::profiler::impl::ActivityType::CUDA};
  Sync(device);
  prof::prepareProfiler(config, acts);
  prof::enableProfiler(config, acts);
  auto t0 = std::chrono::steady_clock::now();
  absl::Status st = fn();
  Sync(device);
  const double wall = Ms(t0);
  std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();
  RETURN_IF_ERROR(st);
  if (!trace.empty()) result->save(trace);
  struct Agg {
    double us = 0;
    int64_t count = 0;
  };
  std::map<std::string, Agg> by_name, by_class;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  int64_t kernels = 0, cpu_ops = 0;
  for (const auto& e : result->events()) {
    if (e.deviceType() != c10::DeviceType::CUDA) {
      ++cpu_ops;
      continue;
    }
    const std::string name = e.name();
    // Memcpy / memset are device activities too; keep them (they cost device time).
    const double us = e.durationNs() / 1000.0;
    by_name[name].us += us;
    by_name[name].count++;
    by_class[KernelClass(name)].us += us;
    by_class[KernelClass(name)].count++;
    spans.emplace_back(e.startNs(), e.startNs() + e.durationNs());
    ++kernels;
  }
  // Device busy time: the union of the activity intervals.
  std::sort(spans.begin(), spans.end());
  double busy_ns = 0;
  uint64_t cur_s = 0, cur_e = 0;
  for (const auto& [s, e] : spans) {
    if (s > cur_e) {
      busy_ns += double(cur_e - cur_s);
      cur_s = s;
      cur_e = e;
    } else {
      cur_e = std::max(cur_e, e);
    }
  }
  busy_ns += double(cur_e - cur_s);
  std::vector<std::pair<std::string, Agg>> top(by_name.begin(), by_name.end());
  std::sort(top.begin(), top.end(), [](const auto& a, const auto& b) { return a.second.us > b.second.us; });
  nlohmann::ordered_json j;
  j["wall_ms"] = wall;
  j["device_busy_ms"] = busy_ns / 1e6;
  j["device_activities"] = kernels;
  j["cpu_events"] = cpu_ops;
  nlohmann::ordered_json classes = nlohmann::ordered_json::object();
  for (const auto& [c, a] : by_class) classes[c] = {{"ms", a.us / 1000.0}, {"count", a.count}};
  j["classes"] = classes;
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (size_t i = 0; i < top.size() && i < 30; ++i) {
    rows.push_back(
        {{"ms", top[i].second.us / 1000.0}, {"count", top[i].second.count}, {"name", top[i].first.substr(0, 160)}});
  }
  j["top"] = rows;
  return j;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

// Spearman correlation of two score lists (average ranks for ties).
double Spearman(const std::vector<double>& a, const std::vector<double>& b) {
  auto ranks = [](const std::vector<double>& v) {
    std::vector<size_t> idx(v.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](size_t i, size_t j) { return v[i] < v[j]; });
    std::vector<double> r(v.size());
    for (size_t i = 0; i < idx.size();) {
      size_t j = i;
      while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
      for (size_t k = i; k <= j; ++k) r[idx[k]] = 0.5 * double(i + j);
      i = j + 1;
    }
    return r;
  };
  auto ra = ranks(a), rb = ranks(b);
  const double n = double(a.size());
  const double ma = std::accumulate(ra.begin(), ra.end(), 0.0) / n, mb = std::accumulate(rb.begin(), rb.end(), 0.0) / n;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) * (ra[i] - ma);
    sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

absl::Status Run(const Options& o) {
  ASSIGN_OR_RETURN(torch::Device device, ParseDevice(o.device));
  ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open(o.model));
  const torch::ScalarType dtype = device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  ASSIGN_OR_RETURN(Qwen2_5_VLModel model, LoadQwen2_5_VL(ckpt, device, dtype));
  ASSIGN_OR_RETURN(CalibSet calib, CalibSet::Load(o.calib));
  RETURN_IF_ERROR(calib.To(device));
  std::vector<LinearDesc> descs;
  for (auto& [name, lin] : model->Linears()) {
    descs.push_back({name, lin->weight.numel(), lin->out_features(), lin->in_features()});
  }
  // The engine's groups for a default (language-model) baseline.
  ASSIGN_OR_RETURN(std::vector<QuantGroup> groups,
                   QuantizableGroups(descs, /*include_vision=*/false, model->config().tie_word_embeddings));
  const std::vector<Format> formats = {Format::kFp8, Format::kNone};

  nlohmann::ordered_json out;
  out["device"] = device.str();
  out["batch"] = o.batch;
  out["steps"] = o.steps;
  out["samples"] = calib.num_samples();
  out["seq_len"] = calib.seq_len();
  out["kernels_compiled"] = kernels::Compiled();
  std::map<std::string, CalibrationResult> amax_by;
  std::map<std::string, std::vector<double>> scores_by;
  for (const std::string& variant : std::vector<std::string>(absl::StrSplit(o.variants, ','))) {
    if (variant != "on" && variant != "off") return absl::InvalidArgumentError("--variants: on and/or off");
    kernels::SetEnabledForTesting(variant == "on");
    nlohmann::ordered_json v;
    // Warm-up: one batch of each pass (cuBLAS handles, allocator, autotuning).
    PassOptions warm{1, o.batch, nullptr, nullptr};
    ASSIGN_OR_RETURN(CalibrationResult amax, Calibrate(model, calib, warm));
    RETURN_IF_ERROR(ScoreGroups(model, calib, ScoreMethod::kGradient, groups, formats, amax, warm).status());

    ASSIGN_OR_RETURN(Qwen2_5_VLInputs in, calib.Batch(0, std::min<int64_t>(o.batch, calib.num_samples())));
    std::vector<double> fwd;
    for (int i = 0; i < 6; ++i) {
      Sync(device);
      auto t0 = std::chrono::steady_clock::now();
      RETURN_IF_ERROR(TorchCall(
          [&]() -> absl::Status {
            torch::InferenceMode guard;
            return model->Forward(in).status();
          },
          "forward"));
      Sync(device);
      if (i > 0) fwd.push_back(Ms(t0));
    }
    v["forward_ms"] = Median(fwd);

    PassOptions timed{o.steps, o.batch, nullptr, nullptr};
    timed.graph_bytes = EngineOptions{}.score_graph_bytes;  // what the engine keeps by default
    if (device.is_cuda()) torch::cuda::synchronize();
    auto t0 = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(amax, Calibrate(model, calib, timed));
    Sync(device);
    v["calibrate_ms_per_batch"] = Ms(t0) / o.steps;
    ResetPeakReserved(device);
    t0 = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(auto scores, ScoreGroups(model, calib, ScoreMethod::kGradient, groups, formats, amax, timed));
    Sync(device);
    v["score_ms_per_batch"] = Ms(t0) / o.steps;
    v["peak_reserved_gb"] = DeviceMemoryNow(device).peak_reserved / 1e9;
    std::vector<double> flat;
    for (const auto& s : scores) flat.push_back(s[0]);
    if (variant == "on") {
      // The same pass keeping exactly K layers' graphs (0: recompute every layer): time, peak, scores.
      nlohmann::ordered_json by_k = nlohmann::ordered_json::object();
      for (const std::string& k : std::vector<std::string>(absl::StrSplit(o.graph_layers, ',', absl::SkipEmpty()))) {
        PassOptions fixed = timed;
        fixed.graph_layers = std::stoi(k);
        ResetPeakReserved(device);
        t0 = std::chrono::steady_clock::now();
        ASSIGN_OR_RETURN(auto kscores, ScoreGroups(model, calib, ScoreMethod::kGradient, groups, formats, amax, fixed));
        Sync(device);
        std::vector<double> kflat;
        for (const auto& s : kscores) kflat.push_back(s[0]);
        by_k[k] = {{"score_ms_per_batch", Ms(t0) / o.steps},
                   {"peak_reserved_gb", DeviceMemoryNow(device).peak_reserved / 1e9},
                   {"spearman_vs_default", Spearman(flat, kflat)}};
      }
      v["score_by_graph_layers"] = by_k;
    }
    amax_by[variant] = amax;
    scores_by[variant] = flat;

    if (!o.profile_dir.empty()) {
      PassOptions one{1, o.batch, nullptr, nullptr};
      ASSIGN_OR_RETURN(v["profile_calibrate"], Profile(device, o.profile_dir + "/calibrate-" + variant + ".json",
                                                       [&] { return Calibrate(model, calib, one).status(); }));
      ASSIGN_OR_RETURN(v["profile_score"], Profile(device, o.profile_dir + "/score-" + variant + ".json", [&] {
                         return ScoreGroups(model, calib, ScoreMethod::kGradient, groups, formats, amax, one).status();
                       }));
      ASSIGN_OR_RETURN(v["profile_forward"], Profile(device, "", [&]() -> absl::Status {
                         return TorchCall(
                             [&]() -> absl::Status {
                               torch::InferenceMode guard;
                               return model->Forward(in).status();
                             },
                             "forward");
                       }));
    }
    out["kernels_" + variant] = v;
    std::cerr << variant << ": forward " << v["forward_ms"] << " ms, calibrate " << v["calibrate_ms_per_batch"]
              << " ms/batch, score " << v["score_ms_per_batch"] << " ms/batch\n";
  }
  if (amax_by.count("on") && amax_by.count("off")) {
    // What the kernels change in the results: the amax values (fused norms and rotary round as the reference
    // does, but RMSNorm sums in another order) and the score ranking.
    const auto& a = amax_by["on"].input_amax;
    const auto& b = amax_by["off"].input_amax;
    double worst = 0;
    int64_t equal = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      worst = std::max(worst, std::abs(double(a[i]) - b[i]) / std::max(1e-30, std::abs(double(b[i]))));
      equal += a[i] == b[i];
    }
    out["input_amax_equal"] = equal;
    out["input_amax_count"] = a.size();
    out["input_amax_max_rel_diff"] = worst;
    out["weight_amax_equal"] = amax_by["on"].weight_amax == amax_by["off"].weight_amax;
    out["score_spearman_on_vs_off"] = Spearman(scores_by["on"], scores_by["off"]);
    double sworst = 0;
    for (size_t i = 0; i < scores_by["on"].size(); ++i) {
      sworst = std::max(
          sworst, std::abs(scores_by["on"][i] - scores_by["off"][i]) / std::max(1e-300, std::abs(scores_by["off"][i])));
    }
    out["score_max_rel_diff"] = sworst;
    out["speedup_calibrate"] = out["kernels_off"]["calibrate_ms_per_batch"].get<double>() /
                               out["kernels_on"]["calibrate_ms_per_batch"].get<double>();
    out["speedup_score"] =
        out["kernels_off"]["score_ms_per_batch"].get<double>() / out["kernels_on"]["score_ms_per_batch"].get<double>();
    out["speedup_forward"] =
        out["kernels_off"]["forward_ms"].get<double>() / out["kernels_on"]["forward_ms"].get<double>();
  }
  std::cout << out.dump(1) << std::endl;
  return absl::OkStatus();
}

}  // namespace
}  // namespace autoquant

int main(int argc, char** argv) {
  autoquant::PreferExpandableCudaSegments();
  autoquant::Options o;
  CLI::App app("Time calibration and gradient scoring with the CUDA kernels on and off");
  app.add_option("--model", o.model, "checkpoint directory")->required();
  app.add_option("--calib", o.calib, "calibration .safetensors")->required();
  app.add_option("--device", o.device, "cuda | cpu");
  app.add_option("--batch", o.batch, "samples per batch");
  app.add_option("--steps", o.steps, "timed batches per pass");
  app.add_option("--profile-dir", o.profile_dir, "write Kineto traces here and add per-kernel tables");
  app.add_option("--variants", o.variants, "on,off | on | off");
  app.add_option("--graph-layers", o.graph_layers,
                 "with the kernels on, also score keeping exactly these numbers of layers' graphs (comma-separated; "
                 "the default pass keeps as many as fit the engine's budget)");
  CLI11_PARSE(app, argc, argv);
  absl::Status st = autoquant::Run(o);
  if (!st.ok()) {
    std::cerr << "aq_baseline_bench: " << st << "\n";
    return 1;
  }
  return 0;
}
