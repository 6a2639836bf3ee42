// Token embedding table registered as "weight" ([vocab, hidden]) with no
// initialisation at construction (weights come from a checkpoint).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace autoquant {

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t dim);
  // ids: [...] int64 -> [..., dim] in the weight's dtype.
  torch::Tensor forward(const torch::Tensor& ids) const;

  torch::Tensor weight;  // [num_embeddings, dim]
};
TORCH_MODULE(Embedding);

}  // namespace autoquant
