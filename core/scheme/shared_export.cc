#include "core/scheme/shared_export.h"

#include <algorithm>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {

namespace {

// What became of one piece.
struct Outcome {
  Blob blob;
  bool written = false, copied = false;
  absl::Status unrecorded;
};

// The piece's blob: the one the daemon recorded for its key, or (none usable: none, a file gone, damaged
// or not the daemon's) produced now and stored. A piece's tensors are produced in order on one thread (a
// weight's scale comes from its producer).
absl::Status FindOrPut(const BlobStore& store, const std::vector<PlannedTensor>& plan, const SharedPiece& piece,
                       const SharedWriteOptions& options, Outcome* o) {
  ASSIGN_OR_RETURN(std::string key, BlobKey(piece.description));
  absl::StatusOr<Blob> blob = absl::NotFoundError("no records");
  if (options.records != nullptr) blob = store.Find(*options.records, key);
  const absl::Status& found = blob.status();
  if (absl::IsNotFound(found) || absl::IsDataLoss(found) || absl::IsFailedPrecondition(found)) {
    std::vector<BlobTensor> tensors;
    for (size_t i : piece.tensors) {
      ASSIGN_OR_RETURN(torch::Tensor t, TorchCall(plan[i].produce, plan[i].spec.name));
      tensors.push_back({plan[i].spec, std::move(t)});
    }
    blob = store.Put(key, tensors, options.records, &o->written, &o->unrecorded);
  }
  if (!blob.ok()) return blob.status();
  o->blob = *std::move(blob);
  return absl::OkStatus();
}

// The blob must hold exactly the piece's tensors as planned: a key that collided with other content
// would otherwise slip a wrong tensor in.
absl::Status CheckHoldsPiece(const Blob& blob, const std::vector<PlannedTensor>& plan, const SharedPiece& piece) {
  if (blob.tensors.size() != piece.tensors.size()) {
    return absl::InternalError(absl::StrCat("blob ", blob.path.string(), " holds ", blob.tensors.size(),
                                            " tensors, the piece plans ", piece.tensors.size()));
  }
  for (size_t k = 0; k < piece.tensors.size(); ++k) {
    const TensorSpec& want = plan[piece.tensors[k]].spec;
    const TensorInfo& got = blob.tensors[k];
    if (got.name != want.name || got.dtype != want.dtype || got.shape != want.shape) {
      return absl::InternalError(absl::StrCat("blob ", blob.path.string(), " holds '", got.name,
                                              "' where the piece plans '", want.name, "' as planned"));
    }
  }
  return absl::OkStatus();
}

// The scheme's weight map, digests and counts from every piece's outcome; every planned tensor must be in
// exactly one piece.
absl::StatusOr<SharedWriteResult> Tally(const std::vector<PlannedTensor>& plan, const std::vector<SharedPiece>& pieces,
                                        const std::vector<Outcome>& outcomes) {
  SharedWriteResult r;
  std::vector<bool> placed(plan.size(), false);
  for (size_t p = 0; p < pieces.size(); ++p) {
    const Outcome& o = outcomes[p];
    for (size_t i : pieces[p].tensors) {
      if (placed[i]) return absl::InternalError(absl::StrCat("tensor '", plan[i].spec.name, "' is in two pieces"));
      placed[i] = true;
      r.weight_map[plan[i].spec.name] = o.blob.FileName();
      r.digests[plan[i].spec.name] = TensorDigest{o.blob.FileName(), o.blob.sha256.at(plan[i].spec.name)};
    }
    r.tensor_bytes += o.blob.data_bytes;
    if (o.written) {
      ++r.blobs_written;
      r.bytes_written += o.blob.data_bytes;
    } else {
      ++r.blobs_reused;
    }
    r.blob_records_failed += !o.unrecorded.ok();
    if (o.copied) {
      ++r.blobs_copied;
      r.bytes_written += o.blob.data_bytes;
    }
  }
  for (size_t i = 0; i < plan.size(); ++i) {
    if (!placed[i]) return absl::InternalError(absl::StrCat("tensor '", plan[i].spec.name, "' is in no piece"));
  }
  return r;
}

}  // namespace

absl::StatusOr<SharedWriteResult> WriteSharedShards(const BlobStore& store, const std::vector<PlannedTensor>& plan,
                                                    const std::vector<SharedPiece>& pieces, const DirHandle& dir,
                                                    const SharedWriteOptions& options) {
  std::vector<Outcome> outcomes(pieces.size());
  std::mutex progress_mu;
  size_t done = 0;
  // Pieces are independent files: several at once keep the disk busy while others hash or quantize.
  RETURN_IF_ERROR(ParallelFor(
      pieces.size(),
      [&](size_t p) -> absl::Status {
        if (options.cancel != nullptr && options.cancel->load()) return absl::CancelledError("export cancelled");
        Outcome& o = outcomes[p];
        RETURN_IF_ERROR(FindOrPut(store, plan, pieces[p], options, &o));
        RETURN_IF_ERROR(CheckHoldsPiece(o.blob, plan, pieces[p]));
        ASSIGN_OR_RETURN(BlobPlacement how, store.Place(o.blob, dir, options.allow_links));
        o.copied = how == BlobPlacement::kCopied;
        o.blob.file.reset();  // placed: the descriptor is not needed any more
        std::lock_guard<std::mutex> lock(progress_mu);
        if (options.progress) options.progress(++done, pieces.size());
        return absl::OkStatus();
      },
      std::min(DefaultParallelism(), 8)));
  ASSIGN_OR_RETURN(SharedWriteResult r, Tally(plan, pieces, outcomes));
  RETURN_IF_ERROR(WriteSafetensorsIndex(dir.ProcPath(), r.weight_map, r.tensor_bytes));
  return r;
}

}  // namespace autoquant
