#include "core/quant/sensitivity.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/model/device_memory.h"
#include "core/model/qwen2_5_vl/architecture.h"
#include "core/quant/fp8.h"
#include "core/quant/linear_hooks.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace {

// Removes every hook it installed when it goes out of scope, also on errors.
class HookScope {
 public:
  explicit HookScope(std::vector<std::pair<std::string, Linear>>& linears) : linears_(linears) {}
  ~HookScope() { Clear(); }
  void Set(size_t i, std::shared_ptr<LinearHook> hook) {
    linears_[i].second->set_hook(std::move(hook));
    touched_.push_back(i);
  }
  void Clear() {
    for (size_t i : touched_) linears_[i].second->set_hook(nullptr);
    touched_.clear();
  }

 private:
  std::vector<std::pair<std::string, Linear>>& linears_;
  std::vector<size_t> touched_;
};

std::vector<std::pair<int64_t, int64_t>> Batches(const CalibSet& calib, const PassOptions& o) {
  auto all = calib.BatchRanges(std::max(1, o.batch_size));
  if (o.steps > 0 && static_cast<size_t>(o.steps) < all.size()) all.resize(o.steps);
  return all;
}

absl::Status CheckCancel(const PassOptions& o) {
  if (o.cancel != nullptr && o.cancel->load()) return absl::CancelledError("cancelled");
  return absl::OkStatus();
}

torch::Tensor AmaxOf(float amax) { return torch::tensor(amax); }

// The first decoder layer a group's members live in; layers.size() for the
// head (lm_head), -1 for the vision tower (the whole network reruns).
int StartLayer(const QuantGroup& g, int num_layers) {
  int start = num_layers;
  for (const auto& m : g.modules) {
    const qwen2_5_vl::Site site = qwen2_5_vl::SiteOf(m);
    if (site.part == qwen2_5_vl::Part::kVision) return -1;
    if (site.part == qwen2_5_vl::Part::kText && site.layer >= 0) start = std::min(start, site.layer);
  }
  return start;
}

void MakeMonotone(std::vector<std::vector<double>>* scores) {
  for (auto& s : *scores) {
    for (size_t f = 1; f < s.size(); ++f) s[f] = std::min(s[f], s[f - 1]);
  }
}

}  // namespace

absl::StatusOr<torch::Tensor> NextTokenLoss(const torch::Tensor& logits, const torch::Tensor& input_ids,
                                            const torch::Tensor& attention_mask) {
  return TorchCall(
      [&] {
        using torch::indexing::Slice;
        torch::Tensor pred = logits.index({Slice(), Slice(0, -1)}).to(torch::kFloat32);
        torch::Tensor target = input_ids.index({Slice(), Slice(1, torch::indexing::None)}).to(torch::kLong);
        if (attention_mask.defined()) {
          torch::Tensor valid = attention_mask.index({Slice(), Slice(1, torch::indexing::None)}).to(torch::kBool);
          target = torch::where(valid, target, torch::full_like(target, -100));
        }
        return torch::nn::functional::cross_entropy(
            pred.reshape({-1, pred.size(-1)}), target.reshape({-1}),
            torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kMean));
      },
      "next-token loss");
}

absl::StatusOr<CalibrationResult> Calibrate(Qwen2_5_VLModel& model, const CalibSet& calib, const PassOptions& options) {
  auto linears = model->Linears();
  const int64_t n = static_cast<int64_t>(linears.size());
  HookScope scope(linears);
  // Every input amax, then every weight amax, in one device buffer: the
  // readout is one copy and one sync instead of two per Linear.
  torch::Tensor all;
  RETURN_IF_ERROR(TorchCall(
      [&] {
        torch::InferenceMode guard;
        const torch::Device device = n > 0 ? linears[0].second->weight.device() : torch::Device(torch::kCPU);
        all = torch::zeros({2 * n}, torch::dtype(torch::kFloat32).device(device));
        for (int64_t i = 0; i < n; ++i) scope.Set(i, std::make_shared<CalibrationHook>(all[i]));
      },
      "calibration setup"));
  auto batches = Batches(calib, options);
  for (size_t b = 0; b < batches.size(); ++b) {
    RETURN_IF_ERROR(CheckCancel(options));
    ASSIGN_OR_RETURN(Qwen2_5_VLInputs in, calib.Batch(batches[b].first, batches[b].second));
    RETURN_IF_ERROR(TorchCall(
        [&]() -> absl::Status {
          torch::InferenceMode guard;
          return model->Forward(in).status();
        },
        "calibration forward"));
    if (options.progress) options.progress(double(b + 1) / double(batches.size()));
  }
  CalibrationResult r;
  RETURN_IF_ERROR(TorchCall(
      [&] {
        torch::InferenceMode guard;
        for (int64_t i = 0; i < n; ++i) {
          torch::Tensor slot = all[n + i];
          AccumulateAmax(linears[i].second->weight, &slot);
        }
        torch::Tensor host = all.cpu();
        const float* v = host.data_ptr<float>();
        r.input_amax.assign(v, v + n);
        r.weight_amax.assign(v + n, v + 2 * n);
      },
      "calibration"));
  return r;
}

namespace {

// dL/dx for the token-mean next-token loss of the head on x, accumulated
// into x.grad a slice of positions at a time: the logits are [batch, seq,
// vocab] (0.9 GB in bf16 at 4 x 768 tokens and Qwen's 152k vocabulary, and
// the float32 loss, its saved softmax and their gradients four times that),
// so the whole head at once would set the peak. Each position's gradient
// is (softmax - onehot) / valid tokens, as in the unsliced loss.
absl::Status BackwardNextTokenLoss(Qwen2_5_VLModel& model, const torch::Tensor& x, const Qwen2_5_VLInputs& in) {
  return TorchCall(
      [&]() -> absl::Status {
        constexpr int64_t kSlice = 256;
        using torch::indexing::Slice;
        torch::Tensor target =
            in.input_ids.to(x.device()).index({Slice(), Slice(1, torch::indexing::None)}).to(torch::kLong);
        if (in.attention_mask.defined()) {
          torch::Tensor valid =
              in.attention_mask.to(x.device()).index({Slice(), Slice(1, torch::indexing::None)}).to(torch::kBool);
          target = torch::where(valid, target, torch::full_like(target, -100));
        }
        const double count = (target != -100).sum().item<double>();
        if (count == 0) return absl::OkStatus();  // nothing to predict: no gradient
        const int64_t positions = target.size(1);
        for (int64_t s0 = 0; s0 < positions; s0 += kSlice) {
          const int64_t n = std::min(kSlice, positions - s0);
          torch::Tensor logits = model->Head(x.narrow(1, s0, n)).to(torch::kFloat32);
          torch::Tensor ce = torch::nn::functional::cross_entropy(
              logits.reshape({-1, logits.size(-1)}), target.narrow(1, s0, n).reshape({-1}),
              torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
          (ce / count).backward();
        }
        return absl::OkStatus();
      },
      "the next-token loss's gradient");
}

// Decoder layers whose graph a gradient batch keeps (PassOptions::graph_layers).
int GraphLayers(const PassOptions& o, int num_layers, int64_t layer_bytes, const torch::Device& device) {
  if (o.graph_layers >= 0) return std::min(o.graph_layers, num_layers);
  if (o.graph_bytes <= 0 || layer_bytes <= 0 || !device.is_cuda()) return 0;
  // Headroom for what the backward allocates besides the kept graph (gradients, the head's slices).
  constexpr int64_t kHeadroom = int64_t{1} << 30;
  const int64_t budget = std::min(o.graph_bytes, AvailableDeviceBytes(device) - kHeadroom);
  return static_cast<int>(std::clamp<int64_t>(budget / layer_bytes, 0, num_layers));
}

// One batch's gradient pass: no-graph forward up to the kept layers, the kept
// layers with their graph, the head's gradient, backward through the kept
// layers, then the remaining layers top-down, each run again with its graph
// and differentiated. *layer_bytes: set, when still 0 on a CUDA device, to
// the bytes one recomputed layer's graph (activations and ScoreHook deltas) holds.
absl::Status ScoreGradientBatch(Qwen2_5_VLModel& model, const Qwen2_5_VLInputs& in, bool vision, int keep,
                                int64_t* layer_bytes) {
  return TorchCall(
      [&]() -> absl::Status {
        const int num_layers = static_cast<int>(model->layers().size());
        const int first_kept = num_layers - keep;
        DecoderInputs prep;
        std::vector<torch::Tensor> hs;  // hs[i]: the input of layer i
        {
          torch::NoGradGuard no_grad;
          ASSIGN_OR_RETURN(prep, model->Prepare(in));
          hs.push_back(prep.hidden);
          for (int i = 0; i < first_kept; ++i) hs.push_back(model->layers()[i]->forward(hs.back(), prep));
        }
        torch::Tensor g;
        {
          torch::Tensor kept_in = hs.back().detach().requires_grad_(true);
          hs.pop_back();
          torch::Tensor h = kept_in;
          for (int i = first_kept; i < num_layers; ++i) h = model->layers()[i]->forward(h, prep);
          // The head's gradient goes to a leaf first: it runs in slices, each its own backward.
          torch::Tensor top = h.detach().requires_grad_(true);
          RETURN_IF_ERROR(BackwardNextTokenLoss(model, top, in));
          g = top.grad();
          if (!g.defined()) return absl::OkStatus();  // nothing to predict in this batch: no gradient anywhere
          if (keep > 0) {
            torch::autograd::backward({h}, {g});
            g = kept_in.grad();
          }
        }
        const torch::Device device = prep.hidden.device();
        for (int i = first_kept - 1; i >= 0; --i) {
          torch::Tensor xi = hs[i].detach().requires_grad_(true);
          const bool measure = *layer_bytes == 0 && device.is_cuda();
          const int64_t before = measure ? DeviceMemoryNow(device).allocated : 0;
          torch::Tensor out = model->layers()[i]->forward(xi, prep);
          if (measure) *layer_bytes = std::max<int64_t>(1, DeviceMemoryNow(device).allocated - before);
          torch::autograd::backward({out}, {g});
          g = xi.grad();
          hs.pop_back();
        }
        if (vision && in.pixel_values.defined()) {
          // The image features reach the decoder through the embeddings: rerun the
          // vision tower with gradients and push dL/d(embeddings) into it.
          Qwen2_5_VLInputs vin = in;
          vin.pixel_values = in.pixel_values.detach().to(torch::kFloat32).requires_grad_(true);
          ASSIGN_OR_RETURN(DecoderInputs p2, model->Prepare(vin));
          torch::autograd::backward({p2.hidden}, {g});
        }
        return absl::OkStatus();
      },
      "gradient scoring");
}

absl::Status ScoreKlBatch(Qwen2_5_VLModel& model, const Qwen2_5_VLInputs& in, const std::vector<QuantGroup>& groups,
                          const std::vector<Format>& formats, const CalibrationResult& amax,
                          std::vector<std::pair<std::string, Linear>>& linears,
                          std::vector<std::vector<double>>* scores, const PassOptions& options) {
  return TorchCall(
      [&]() -> absl::Status {
        torch::InferenceMode guard;
        ASSIGN_OR_RETURN(DecoderInputs prep, model->Prepare(in));
        std::vector<torch::Tensor> hs = {prep.hidden};
        for (auto& layer : model->layers()) hs.push_back(layer->forward(hs.back(), prep));
        // float64: KL between nearly equal distributions is a difference of large
        // sums; in float32 its rounding noise (~1e-6) can outweigh the KL itself.
        torch::Tensor logp_ref = torch::log_softmax(model->Head(hs.back()).to(torch::kFloat64), -1);
        torch::Tensor p_ref = logp_ref.exp();
        torch::Tensor valid = in.attention_mask.defined()
                                  ? in.attention_mask.to(logp_ref.device()).to(torch::kFloat64)
                                  : torch::ones(logp_ref.sizes().slice(0, 2), logp_ref.options());
        const int num_layers = static_cast<int>(model->layers().size());
        for (size_t g = 0; g < groups.size(); ++g) {
          RETURN_IF_ERROR(CheckCancel(options));
          const int start = StartLayer(groups[g], num_layers);
          for (size_t f = 0; f + 1 < formats.size(); ++f) {
            HookScope scope(linears);
            for (size_t li : groups[g].linear_index) {
              scope.Set(li, std::make_shared<FakeQuantHook>(*linears[li].second, formats[f],
                                                            AmaxOf(amax.input_amax[li]), AmaxOf(amax.weight_amax[li])));
            }
            // Vision groups change the embeddings: rerun from the vision tower.
            DecoderInputs local;
            const DecoderInputs* p = &prep;
            if (start < 0) {
              ASSIGN_OR_RETURN(local, model->Prepare(in));
              p = &local;
            }
            torch::Tensor h = start < 0 ? local.hidden : hs[start];
            for (int i = std::max(start, 0); i < num_layers; ++i) h = model->layers()[i]->forward(h, *p);
            torch::Tensor logq = torch::log_softmax(model->Head(h).to(torch::kFloat64), -1);
            torch::Tensor kl = (p_ref * (logp_ref - logq)).sum(-1);
            (*scores)[g][f] += (kl * valid).sum().item<double>();
          }
        }
        return absl::OkStatus();
      },
      "kl_div scoring");
}

}  // namespace

absl::StatusOr<std::vector<std::vector<double>>> ScoreGroups(Qwen2_5_VLModel& model, const CalibSet& calib,
                                                             ScoreMethod method, const std::vector<QuantGroup>& groups,
                                                             const std::vector<Format>& formats,
                                                             const CalibrationResult& amax,
                                                             const PassOptions& options) {
  if (formats.empty() || formats.back() != Format::kNone) {
    return absl::InvalidArgumentError("formats must end with NONE");
  }
  for (size_t f = 0; f + 1 < formats.size(); ++f) {
    if (!IsQuantized(formats[f])) return absl::InvalidArgumentError("NONE must be the last format, and only there");
  }
  auto linears = model->Linears();
  // Hooks index amax and Linears by these: a mismatch would read out of bounds.
  if (amax.input_amax.size() != linears.size() || amax.weight_amax.size() != linears.size()) {
    return absl::InvalidArgumentError(absl::StrCat("calibration has ", amax.input_amax.size(), " input and ",
                                                   amax.weight_amax.size(), " weight amax values for ", linears.size(),
                                                   " Linears"));
  }
  for (const auto& g : groups) {
    for (size_t li : g.linear_index) {
      if (li >= linears.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("group '", g.key, "' names Linear ", li, " of ", linears.size()));
      }
    }
  }
  const size_t nf = formats.size() - 1;
  std::vector<std::vector<double>> scores(groups.size(), std::vector<double>(formats.size(), 0.0));
  auto batches = Batches(calib, options);

  if (method == ScoreMethod::kKlDiv) {
    for (size_t b = 0; b < batches.size(); ++b) {
      RETURN_IF_ERROR(CheckCancel(options));
      ASSIGN_OR_RETURN(Qwen2_5_VLInputs in, calib.Batch(batches[b].first, batches[b].second));
      RETURN_IF_ERROR(TorchCall(
          [&] { return ScoreKlBatch(model, in, groups, formats, amax, linears, &scores, options); }, "kl_div scoring"));
      if (options.progress) options.progress(double(b + 1) / double(batches.size()));
    }
    MakeMonotone(&scores);
    return scores;
  }

  HookScope scope(linears);
  std::vector<std::shared_ptr<ScoreHook>> hooks(linears.size());
  bool vision = false;
  RETURN_IF_ERROR(TorchCall(
      [&] {
        for (const auto& g : groups) {
          for (size_t li : g.linear_index) {
            std::vector<torch::Tensor> in_s, w_s;
            for (size_t f = 0; f < nf; ++f) {
              in_s.push_back(AmaxOf(amax.input_amax[li]).to(linears[li].second->weight.device()));
              w_s.push_back(AmaxOf(amax.weight_amax[li]).to(linears[li].second->weight.device()));
            }
            hooks[li] = std::make_shared<ScoreHook>(std::vector<Format>(formats.begin(), formats.end() - 1), in_s, w_s);
            scope.Set(li, hooks[li]);
            vision = vision || qwen2_5_vl::IsVision(linears[li].first);
          }
        }
      },
      "gradient scoring setup"));
  const int num_layers = static_cast<int>(model->layers().size());
  const torch::Device device = linears.empty() ? torch::Device(torch::kCPU) : linears[0].second->weight.device();
  int64_t layer_bytes = 0;
  for (size_t b = 0; b < batches.size(); ++b) {
    RETURN_IF_ERROR(CheckCancel(options));
    ASSIGN_OR_RETURN(Qwen2_5_VLInputs in, calib.Batch(batches[b].first, batches[b].second));
    RETURN_IF_ERROR(TorchCall(
        [&] {
          const int keep = GraphLayers(options, num_layers, layer_bytes, device);
          return ScoreGradientBatch(model, in, vision, keep, &layer_bytes);
        },
        "gradient scoring"));
    if (options.progress) options.progress(double(b + 1) / double(batches.size()));
  }
  RETURN_IF_ERROR(TorchCall(
      [&] {
        for (size_t g = 0; g < groups.size(); ++g) {
          for (size_t li : groups[g].linear_index) {
            if (!hooks[li]->scores().defined()) continue;  // never reached (e.g. no images for vision)
            torch::Tensor s = hooks[li]->scores().cpu();
            for (size_t f = 0; f < nf; ++f) scores[g][f] += s[f].item<double>();
          }
        }
      },
      "gradient scoring"));
  MakeMonotone(&scores);
  return scores;
}

}  // namespace autoquant
