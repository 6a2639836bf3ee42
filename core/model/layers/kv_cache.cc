#include "core/model/layers/kv_cache.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace autoquant {
namespace {

// buffer: [B, H, capacity, D] -> a new buffer with `capacity` slots holding the first `length`.
torch::Tensor Grow(const torch::Tensor& buffer, int64_t length, int64_t capacity) {
  torch::Tensor grown = torch::empty({buffer.size(0), buffer.size(1), capacity, buffer.size(3)}, buffer.options());
  grown.narrow(2, 0, length).copy_(buffer.narrow(2, 0, length));
  return grown;
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> LayerKvCache::Append(const torch::Tensor& k, const torch::Tensor& v) {
  TORCH_CHECK(k.dim() == 4 && k.sizes().equals(v.sizes()), "KV cache: k and v must be [B, heads, n, D] alike, got ",
              k.sizes(), " and ", v.sizes());
  const int64_t n = k.size(2);
  if (!k_.defined()) {
    const int64_t capacity = std::max(capacity_, n);
    k_ = torch::empty({k.size(0), k.size(1), capacity, k.size(3)}, k.options());
    v_ = torch::empty({v.size(0), v.size(1), capacity, v.size(3)}, v.options());
  }
  TORCH_CHECK(k.size(0) == k_.size(0) && k.size(1) == k_.size(1) && k.size(3) == k_.size(3), "KV cache: keys of shape ",
              k.sizes(), " do not continue the cached ", k_.sizes());
  TORCH_CHECK(k.scalar_type() == k_.scalar_type() && k.device() == k_.device() && v.scalar_type() == v_.scalar_type() &&
                  v.device() == v_.device(),
              "KV cache: keys and values must keep the cached dtype and device");
  if (length_ + n > k_.size(2)) {
    const int64_t capacity = std::max(2 * k_.size(2), length_ + n);
    k_ = Grow(k_, length_, capacity);
    v_ = Grow(v_, length_, capacity);
  }
  k_.narrow(2, length_, n).copy_(k);
  v_.narrow(2, length_, n).copy_(v);
  length_ += n;
  return {k_.narrow(2, 0, length_), v_.narrow(2, 0, length_)};
}

KvCache::KvCache(int64_t num_layers, int64_t capacity) : layers_(num_layers, LayerKvCache(capacity)) {}

}  // namespace autoquant
