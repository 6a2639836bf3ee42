#include "core/io/safetensors_header.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace autoquant {
namespace {
using json = nlohmann::json;

// Multiplies with overflow detection: a hostile header must not wrap around.
bool MulOverflow(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

absl::Status Invalid(absl::string_view source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}
}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view file, absl::string_view source) {
  if (file.size() < 8) {
    return Invalid(source, absl::StrCat("truncated safetensors file: ", file.size(),
                                        " bytes, fewer than the 8-byte header length"));
  }
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);  // little-endian on every platform we build for
  if (n > file.size() - 8) {
    return Invalid(source, absl::StrCat("header length ", n, " reaches beyond the end of the file (", file.size(),
                                        " bytes); the file is truncated or not safetensors"));
  }
  absl::string_view text = file.substr(8, n);
  const uint64_t data_size = file.size() - 8 - n;

  // nlohmann keeps the last of duplicated keys; watch the top-level keys to catch them.
  std::set<std::string> seen;
  std::vector<std::string> duplicates;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      std::string key = parsed.get<std::string>();
      if (!seen.insert(key).second) duplicates.push_back(key);
    }
    return true;
  };
  json header = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/false);
  if (header.is_discarded()) {
    return Invalid(source, "header is not valid JSON");
  }
  if (!header.is_object()) return Invalid(source, "header JSON is not an object");
  if (!duplicates.empty()) {
    return Invalid(source, absl::StrCat("duplicate tensor names in header: ", absl::StrJoin(duplicates, ", ")));
  }

  SafetensorsHeader out;
  out.data_start = 8 + n;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return Invalid(source, "__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) {
          return Invalid(source, absl::StrCat("__metadata__ value of '", k, "' is not a string"));
        }
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor '", name, "'");
    if (!entry.is_object()) return Invalid(source, absl::StrCat(where, " entry is not an object"));
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    if (dt == entry.end() || !dt->is_string()) {
      return Invalid(source, absl::StrCat(where, " has no string 'dtype'"));
    }
    if (sh == entry.end() || !sh->is_array()) {
      return Invalid(source, absl::StrCat(where, " has no array 'shape'"));
    }
    if (off == entry.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned()) {
      return Invalid(source, absl::StrCat(where, " has no 'data_offsets' [begin, end] of unsigned integers"));
    }
    TensorInfo info;
    info.name = name;
    auto dtype = DTypeFromName(dt->get<std::string>());
    if (!dtype) {
      return Invalid(source, absl::StrCat(where, " has unknown dtype '", dt->get<std::string>(),
                                          "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL F8_E4M3 F8_E5M2)"));
    }
    info.dtype = *dtype;
    uint64_t expected = static_cast<uint64_t>(DTypeSize(info.dtype));
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) {
        return Invalid(source, absl::StrCat(where, " shape has a non-integer or negative dimension"));
      }
      uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || MulOverflow(expected, dim, &expected)) {
        return Invalid(source, absl::StrCat(where, " shape is too large"));
      }
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    info.begin = (*off)[0].get<uint64_t>();
    info.end = (*off)[1].get<uint64_t>();
    if (info.begin > info.end || info.end > data_size) {
      return Invalid(source, absl::StrCat(where, " data_offsets [", info.begin, ", ", info.end,
                                          ") lie outside the data buffer of ", data_size, " bytes"));
    }
    if (info.nbytes() != expected) {
      return Invalid(
          source, absl::StrCat(where, " spans ", info.nbytes(), " bytes but shape [", absl::StrJoin(info.shape, ", "),
                               "] x ", DTypeName(info.dtype), " needs ", expected));
    }
    out.tensors.push_back(std::move(info));
  }
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < out.tensors.size(); ++i) {
    const auto& prev = out.tensors[i - 1];
    const auto& cur = out.tensors[i];
    if (cur.begin < prev.end && cur.nbytes() > 0 && prev.nbytes() > 0) {
      return Invalid(source, absl::StrCat("data of tensors '", prev.name, "' [", prev.begin, ", ", prev.end, ") and '",
                                          cur.name, "' [", cur.begin, ", ", cur.end, ") overlap"));
    }
  }
  return out;
}

std::string SerializeSafetensorsHeader(const std::vector<TensorInfo>& tensors,
                                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (!metadata.empty()) j["__metadata__"] = metadata;
  for (const auto& t : tensors) {
    j[t.name] = {{"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  }
  std::string text = j.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint64_t n = text.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  out += text;
  return out;
}

}  // namespace autoquant
