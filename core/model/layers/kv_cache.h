// Keys and values of a decoder's attention layers, kept between the forwards
// of autoregressive generation (what transformers' DynamicCache holds).
//
//   KvCache cache(num_layers, /*capacity=*/prompt_len + max_new_tokens);
//   h = layer_i->forward(h, prepared, &cache.layer(i));   // prefill: the whole prompt
//   h = layer_i->forward(h1, step, &cache.layer(i));      // then one token per step
//
// Each layer's buffers are allocated on its first Append, in the dtype and on
// the device of the keys it is given, with room for `capacity` tokens; past
// that they grow (doubling). Not thread-safe.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace autoquant {

class LayerKvCache {
 public:
  explicit LayerKvCache(int64_t capacity) : capacity_(capacity) {}

  // k, v: [B, kv_heads, n, D] for the n tokens after the `length()` cached
  // ones -> every key and value so far, [B, kv_heads, length() + n, D] (views
  // of the buffers, valid until the next Append). Throws as torch ops do
  // (e.g. a batch, head count, head size, dtype or device that differs from
  // the first Append's); call it inside TorchCall.
  std::pair<torch::Tensor, torch::Tensor> Append(const torch::Tensor& k, const torch::Tensor& v);

  // Tokens stored.
  int64_t length() const { return length_; }

 private:
  int64_t capacity_;
  int64_t length_ = 0;
  torch::Tensor k_, v_;  // [B, kv_heads, capacity, D]
};

class KvCache {
 public:
  // capacity: the tokens each layer is expected to hold (a hint, see above).
  KvCache(int64_t num_layers, int64_t capacity);

  LayerKvCache& layer(size_t i) { return layers_.at(i); }
  size_t num_layers() const { return layers_.size(); }
  // Tokens stored (the first layer's count; all layers agree after a full forward).
  int64_t length() const { return layers_.empty() ? 0 : layers_.front().length(); }

 private:
  std::vector<LayerKvCache> layers_;
};

}  // namespace autoquant
