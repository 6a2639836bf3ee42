#include "core/quant/shared_export.h"

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {

absl::StatusOr<SharedWriteResult> WriteSharedShards(const BlobStore& store, const std::vector<PlannedTensor>& plan,
                                                    const std::vector<SharedPiece>& pieces,
                                                    const std::filesystem::path& dir,
                                                    const SharedWriteOptions& options) {
  SharedWriteResult r;
  std::vector<bool> placed(plan.size(), false);
  for (size_t p = 0; p < pieces.size(); ++p) {
    if (options.cancel != nullptr && options.cancel->load()) return absl::CancelledError("export cancelled");
    const SharedPiece& piece = pieces[p];
    ASSIGN_OR_RETURN(std::string key, BlobKey(piece.description));
    absl::StatusOr<Blob> blob = store.Find(key);
    if (blob.ok()) {
      ++r.blobs_reused;
    } else if (absl::IsNotFound(blob.status()) || absl::IsDataLoss(blob.status())) {
      std::vector<BlobTensor> tensors;
      for (size_t i : piece.tensors) {
        ASSIGN_OR_RETURN(torch::Tensor t, TorchCall(plan[i].produce, plan[i].spec.name));
        tensors.push_back({plan[i].spec, std::move(t)});
      }
      ASSIGN_OR_RETURN(blob, store.Put(key, tensors));
      ++r.blobs_written;
      r.bytes_written += blob->data_bytes;
    } else {
      return blob.status();
    }
    // The blob must hold exactly the piece's tensors as planned: a key that
    // collided with other content would otherwise slip a wrong tensor in.
    if (blob->tensors.size() != piece.tensors.size()) {
      return absl::InternalError(absl::StrCat("blob ", blob->path.string(), " holds ", blob->tensors.size(),
                                              " tensors, the piece plans ", piece.tensors.size()));
    }
    for (size_t k = 0; k < piece.tensors.size(); ++k) {
      const TensorSpec& want = plan[piece.tensors[k]].spec;
      const TensorInfo& got = blob->tensors[k];
      if (got.name != want.name || got.dtype != want.dtype || got.shape != want.shape) {
        return absl::InternalError(absl::StrCat("blob ", blob->path.string(), " holds '", got.name,
                                                "' where the piece plans '", want.name, "' as planned"));
      }
      if (placed[piece.tensors[k]]) {
        return absl::InternalError(absl::StrCat("tensor '", want.name, "' is in two pieces"));
      }
      placed[piece.tensors[k]] = true;
      r.weight_map[want.name] = blob->FileName();
      r.digests[want.name] = TensorDigest{blob->FileName(), blob->sha256.at(want.name)};
    }
    ASSIGN_OR_RETURN(BlobPlacement how, store.Place(*blob, dir, options.allow_links));
    if (how == BlobPlacement::kCopied) {
      ++r.blobs_copied;
      r.bytes_written += blob->data_bytes;
    }
    r.tensor_bytes += blob->data_bytes;
    if (options.progress) options.progress(p + 1, pieces.size());
  }
  for (size_t i = 0; i < plan.size(); ++i) {
    if (!placed[i]) return absl::InternalError(absl::StrCat("tensor '", plan[i].spec.name, "' is in no piece"));
  }
  RETURN_IF_ERROR(WriteSafetensorsIndex(dir, r.weight_map, r.tensor_bytes));
  return r;
}

}  // namespace autoquant
