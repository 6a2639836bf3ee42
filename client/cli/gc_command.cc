#include "client/cli/gc_command.h"

#include <filesystem>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/blob_store.h"
#include "core/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace autoquant::cli {

absl::Status RunGc(const GcOptions& o, std::ostream& out) {
  if (o.min_age_seconds < 0) return absl::InvalidArgumentError("--min-age-seconds must be >= 0");
  // Opened as the daemon opens it: `.autoquant/blobs` and `sha256/` never through a symlink.
  absl::StatusOr<BlobStore> store = BlobStore::Open(o.models_root, ".autoquant/blobs", /*create=*/false);
  if (absl::IsNotFound(store.status())) {
    return absl::NotFoundError(absl::StrCat((std::filesystem::path(o.models_root) / ".autoquant" / "blobs").string(),
                                            " does not exist: ", o.models_root, " holds no shared-layout schemes"));
  }
  if (!store.ok()) return store.status();
  ASSIGN_OR_RETURN(BlobGcResult r, store->CollectGarbage(o.min_age_seconds, o.dry_run));
  if (o.json) {
    out << nlohmann::json{{"blobs_removed", r.blobs_removed},
                          {"bytes_freed", r.bytes_freed},
                          {"refs_removed", r.refs_removed},
                          {"blobs_kept", r.blobs_kept},
                          {"dry_run", o.dry_run}}
               .dump()
        << "\n";
  } else {
    out << absl::StrFormat("%s %d unlinked blobs (%.3f GB), %d references of an earlier version; kept %d\n",
                           o.dry_run ? "would remove" : "removed", r.blobs_removed, r.bytes_freed / 1e9, r.refs_removed,
                           r.blobs_kept);
  }
  return absl::OkStatus();
}

void AddGcCommand(CLI::App& app, absl::Status* status) {
  auto o = std::make_shared<GcOptions>();
  CLI::App* c = app.add_subcommand("gc", "Free the shared-layout blobs no scheme under a models root links any more");
  c->add_option("--models-root", o->models_root, "the models root (blobs in <root>/.autoquant/blobs)")->required();
  c->add_option("--min-age-seconds", o->min_age_seconds,
                "keep blobs younger than this, which an export running now may still link")
      ->capture_default_str();
  c->add_flag("--dry-run", o->dry_run, "count what would be removed, remove nothing");
  c->add_flag("--json", o->json, "print the counts as JSON");
  c->callback([o, status] { *status = RunGc(*o, std::cout); });
}

}  // namespace autoquant::cli
