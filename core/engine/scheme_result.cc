#include "core/engine/scheme_result.h"

#include <cmath>

namespace autoquant {

std::map<std::string, double> SchemeResult::ToMetrics() const {
  std::map<std::string, double> m = {
      {"baseline_seconds", baseline_seconds},
      {"baseline_peak_device_bytes", static_cast<double>(baseline_peak_device_bytes)},
      {"export_seconds", export_seconds},
      {"export_bytes", static_cast<double>(export_bytes)},
      {"export_tensor_bytes", static_cast<double>(export_tensor_bytes)},
      {"export_write_seconds", export_write_seconds},
      {"export_check_seconds", export_check_seconds},
      {"export_resident_weights", static_cast<double>(export_resident_weights)},
  };
  if (layout == ExportLayout::kShared) {
    m["blobs_reused"] = static_cast<double>(blobs_reused);
    m["blobs_written"] = static_cast<double>(blobs_written);
    m["blobs_copied"] = static_cast<double>(blobs_copied);
    m["blob_records_failed"] = static_cast<double>(blob_records_failed);
  } else {
    m["export_produce_seconds"] = export_produce_seconds;
    m["export_hash_seconds"] = export_hash_seconds;
    m["export_pwrite_seconds"] = export_pwrite_seconds;
    m["export_writer_threads"] = static_cast<double>(export_writer_threads);
  }
  return m;
}

nlohmann::ordered_json SchemeResult::ToJson() const {
  nlohmann::ordered_json j;
  j["out_dir"] = out_dir.string();
  j["scheme"] = scheme;
  j["format"] = ExportFormatName(format);
  j["layout"] = ExportLayoutName(layout);
  j["effective_bits"] = effective_bits;
  j["groups_quantized"] = groups_quantized;
  j["groups_total"] = groups_total;
  j["baseline_key"] = baseline_key;
  j["baseline_reused"] = baseline_reused;
  for (const auto& [name, value] : ToMetrics()) {
    // Counts stay integers in the JSON (bytes, blobs, threads); times are numbers with a fraction.
    const bool count =
        value == std::floor(value) && std::fabs(value) < 9.0e15 && name.find("seconds") == std::string::npos;
    if (count) {
      j[name] = static_cast<int64_t>(value);
    } else {
      j[name] = value;
    }
  }
  return j;
}

}  // namespace autoquant
