#include "core/model/layers/embedding.h"

#include <ATen/ATen.h>

namespace autoquant {

EmbeddingImpl::EmbeddingImpl(int64_t num_embeddings, int64_t dim) {
  weight = register_parameter("weight", torch::empty({num_embeddings, dim}), /*requires_grad=*/false);
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) const { return at::embedding(weight, ids); }

}  // namespace autoquant
