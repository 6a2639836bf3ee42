#include "core/quant/baseline.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/file_util.h"
#include "core/util/hash.h"
#include "core/util/json_int.h"
#include "core/util/status_macros.h"

namespace autoquant {
using json = nlohmann::json;

// Whole bit counts stay JSON integers, so that FP8-only baselines keep the keys they had before
// formats with fractional bits (NVFP4's 4.5) existed.
json BitsJson(double bits) {
  if (bits == static_cast<double>(static_cast<int64_t>(bits))) return static_cast<int64_t>(bits);
  return bits;
}

absl::StatusOr<std::string> BaselineKey(const BaselineInputs& in) {
  json j;
  j["v"] = 2;  // bump when the scoring algorithm changes meaning (2: the batch size is part of the key)
  j["model"] = in.model_fingerprint;
  j["calib"] = in.calib_fingerprint;
  j["method"] = ScoreMethodName(in.method);
  j["formats"] = json::array();
  for (Format f : in.formats) j["formats"].push_back({FormatName(f), BitsJson(SpecOf(f).bits)});
  j["calib_steps"] = in.calib_steps;
  j["score_steps"] = in.score_steps;
  j["batch_size"] = in.batch_size;
  j["include_vision"] = in.include_vision;
  j["dtype"] = in.compute_dtype;
  return Sha256Hex(j.dump());
}

BaselineRequest BaselineRequestOf(const SchemeSpec& spec) {
  return {spec.method, spec.calib_steps, spec.score_steps, spec.include_vision, spec.batch_size, spec.formats};
}

void Baseline::ComputeRanking() {
  ranking.resize(groups.size());
  std::iota(ranking.begin(), ranking.end(), 0);
  std::stable_sort(ranking.begin(), ranking.end(), [&](size_t a, size_t b) { return scores[a][0] < scores[b][0]; });
}

size_t Baseline::format_index(Format f) const {
  for (size_t i = 0; i < formats.size(); ++i) {
    if (formats[i] == f) return i;
  }
  return formats.size();
}

json BaselineToJson(const Baseline& b) {
  json j;
  j["key"] = b.key;
  j["inputs"] = {{"model_fingerprint", b.inputs.model_fingerprint},
                 {"calib_fingerprint", b.inputs.calib_fingerprint},
                 {"method", ScoreMethodName(b.inputs.method)},
                 {"calib_steps", b.inputs.calib_steps},
                 {"score_steps", b.inputs.score_steps},
                 {"batch_size", b.inputs.batch_size},
                 {"include_vision", b.inputs.include_vision},
                 {"compute_dtype", b.inputs.compute_dtype}};
  j["formats"] = json::array();
  for (Format f : b.formats) {
    j["formats"].push_back({{"name", FormatName(f)}, {"recipe", SpecOf(f).recipe}, {"bits", BitsJson(SpecOf(f).bits)}});
  }
  j["linears"] = json::array();
  for (const auto& l : b.linears) {
    j["linears"].push_back(
        {{"name", l.name}, {"out", l.out_features}, {"in", l.in_features}, {"numel", l.weight_numel}});
  }
  j["groups"] = json::array();
  for (size_t g = 0; g < b.groups.size(); ++g) {
    j["groups"].push_back({{"key", b.groups[g].key},
                           {"linears", b.groups[g].linear_index},
                           {"numel", b.groups[g].weight_numel},
                           {"scores", b.scores[g]},
                           {"costs", b.costs[g]}});
  }
  j["input_amax"] = b.input_amax;
  j["weight_amax"] = b.weight_amax;
  j["ranking"] = b.ranking;
  j["total_weight_numel"] = b.total_weight_numel;
  j["score_seconds"] = b.score_seconds;
  j["calib_seconds"] = b.calib_seconds;
  return j;
}

namespace {

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("baseline is inconsistent: ", what));
}

// Non-negative and finite: what the search and the exporter assume of
// scores, costs and amax (JSON cannot even hold a non-finite number).
absl::Status CheckValues(absl::string_view what, size_t index, const std::vector<double>& v, size_t want) {
  if (v.size() != want) {
    return Corrupt(absl::StrCat(what, "[", index, "] has ", v.size(), " entries, expected ", want));
  }
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i]) || v[i] < 0) {
      return Corrupt(absl::StrCat(what, "[", index, "][", i, "] = ", v[i], " is not a finite non-negative number"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckAmax(absl::string_view what, const std::vector<std::vector<float>>& amax, size_t formats,
                       size_t linears) {
  if (amax.size() != formats) {
    return Corrupt(absl::StrCat(what, " has ", amax.size(), " formats, expected ", formats));
  }
  for (size_t f = 0; f < amax.size(); ++f) {
    RETURN_IF_ERROR(CheckValues(what, f, std::vector<double>(amax[f].begin(), amax[f].end()), linears));
  }
  return absl::OkStatus();
}

// Everything later code indexes by: a baseline that passes cannot make the
// search, the plan or the exporter read out of bounds.
absl::Status Validate(const Baseline& b) {
  if (b.formats.empty() || b.formats.back() != Format::kNone) return Corrupt("formats must end with NONE");
  for (size_t f = 0; f + 1 < b.formats.size(); ++f) {
    if (b.formats[f] == Format::kNone) return Corrupt("NONE must be the last format");
  }
  for (const auto& l : b.linears) {
    if (l.weight_numel < 0 || l.out_features < 0 || l.in_features < 0) {
      return Corrupt(absl::StrCat("Linear '", l.name, "' has a negative size"));
    }
  }
  const size_t nf = b.formats.size();
  if (b.scores.size() != b.groups.size() || b.costs.size() != b.groups.size()) {
    return Corrupt(
        absl::StrCat(b.groups.size(), " groups but ", b.scores.size(), " score and ", b.costs.size(), " cost rows"));
  }
  if (b.groups.empty()) return Corrupt("no groups");
  std::vector<bool> grouped(b.linears.size(), false);
  int64_t total = 0;
  for (size_t g = 0; g < b.groups.size(); ++g) {
    const QuantGroup& qg = b.groups[g];
    if (qg.linear_index.empty()) return Corrupt(absl::StrCat("group '", qg.key, "' has no Linears"));
    int64_t numel = 0;
    for (size_t i : qg.linear_index) {
      if (i >= b.linears.size()) {
        return Corrupt(absl::StrCat("group '", qg.key, "' names Linear ", i, " of ", b.linears.size()));
      }
      if (grouped[i]) return Corrupt(absl::StrCat("Linear '", b.linears[i].name, "' is in two groups"));
      grouped[i] = true;
      numel += b.linears[i].weight_numel;
    }
    if (qg.weight_numel != numel) {
      return Corrupt(
          absl::StrCat("group '", qg.key, "' has numel ", qg.weight_numel, " but its Linears sum to ", numel));
    }
    total += numel;
    RETURN_IF_ERROR(CheckValues("scores", g, b.scores[g], nf));
    RETURN_IF_ERROR(CheckValues("costs", g, b.costs[g], nf));
    for (size_t f = 0; f < nf; ++f) {
      // Written from the same expression, and doubles round-trip through JSON exactly.
      if (b.costs[g][f] != Baseline::Cost(qg.weight_numel, b.formats[f])) {
        return Corrupt(absl::StrCat("costs[", g, "][", f, "] = ", b.costs[g][f], " is not numel x bits / 16"));
      }
    }
  }
  if (b.total_weight_numel != total || total <= 0) {
    return Corrupt(absl::StrCat("total_weight_numel is ", b.total_weight_numel, ", the groups sum to ", total));
  }
  RETURN_IF_ERROR(CheckAmax("input_amax", b.input_amax, nf - 1, b.linears.size()));
  RETURN_IF_ERROR(CheckAmax("weight_amax", b.weight_amax, nf - 1, b.linears.size()));
  if (b.ranking.size() != b.groups.size()) {
    return Corrupt(absl::StrCat("ranking has ", b.ranking.size(), " entries for ", b.groups.size(), " groups"));
  }
  std::vector<bool> ranked(b.groups.size(), false);
  for (size_t r = 0; r < b.ranking.size(); ++r) {
    const size_t g = b.ranking[r];
    if (g >= b.groups.size()) {
      return Corrupt(absl::StrCat("ranking[", r, "] = ", g, " is out of range (", b.groups.size(), " groups)"));
    }
    if (ranked[g]) return Corrupt(absl::StrCat("ranking is not a permutation: group ", g, " appears twice"));
    ranked[g] = true;
    if (r > 0 && b.scores[g][0] < b.scores[b.ranking[r - 1]][0]) {
      return Corrupt(absl::StrCat("ranking is not ordered by score at position ", r));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Baseline> BaselineFromJson(const json& j) {
  try {
    Baseline b;
    b.key = j.at("key").get<std::string>();
    const auto& in = j.at("inputs");
    b.inputs.model_fingerprint = in.at("model_fingerprint");
    b.inputs.calib_fingerprint = in.at("calib_fingerprint");
    ASSIGN_OR_RETURN(b.inputs.method, ParseScoreMethod(in.at("method").get<std::string>()));
    b.inputs.calib_steps = JsonInt<int>(in.at("calib_steps"));
    b.inputs.score_steps = JsonInt<int>(in.at("score_steps"));
    b.inputs.batch_size = JsonInt<int>(in.at("batch_size"));
    b.inputs.include_vision = in.at("include_vision");
    b.inputs.compute_dtype = in.at("compute_dtype");
    for (const auto& f : j.at("formats")) {
      // A name this autoquant does not know, or one whose recipe or bits differ from its registry's,
      // is another version's baseline: recomputed, never reinterpreted.
      absl::StatusOr<Format> format = ParseFormat(f.at("name").get<std::string>());
      if (!format.ok()) return Corrupt(std::string(format.status().message()));
      if (f.at("recipe").get<std::string>() != SpecOf(*format).recipe || !f.at("bits").is_number() ||
          f.at("bits").get<double>() != SpecOf(*format).bits) {
        return Corrupt(absl::StrCat("format '", FormatName(*format), "' is recorded as ", f.at("recipe").dump(),
                                    " with ", f.at("bits").dump(), " bits, not as this autoquant defines it (",
                                    SpecOf(*format).recipe, ", ", SpecOf(*format).bits, " bits)"));
      }
      b.formats.push_back(*format);
      if (IsQuantized(*format)) b.inputs.formats.push_back(*format);
    }
    for (const auto& l : j.at("linears")) {
      b.linears.push_back(
          {l.at("name"), JsonInt<int64_t>(l.at("numel")), JsonInt<int64_t>(l.at("out")), JsonInt<int64_t>(l.at("in"))});
    }
    for (const auto& g : j.at("groups")) {
      QuantGroup qg;
      qg.key = g.at("key");
      qg.linear_index = JsonInts<size_t>(g.at("linears"));
      for (size_t i : qg.linear_index) {
        if (i >= b.linears.size()) {
          return Corrupt(absl::StrCat("group '", qg.key, "' names Linear ", i, " of ", b.linears.size()));
        }
        qg.modules.push_back(b.linears[i].name);
      }
      qg.weight_numel = JsonInt<int64_t>(g.at("numel"));
      b.groups.push_back(std::move(qg));
      b.scores.push_back(g.at("scores").get<std::vector<double>>());
      b.costs.push_back(g.at("costs").get<std::vector<double>>());
    }
    b.input_amax = j.at("input_amax").get<std::vector<std::vector<float>>>();
    b.weight_amax = j.at("weight_amax").get<std::vector<std::vector<float>>>();
    b.ranking = JsonInts<size_t>(j.at("ranking"));
    b.total_weight_numel = JsonInt<int64_t>(j.at("total_weight_numel"));
    b.score_seconds = j.value("score_seconds", 0.0);
    b.calib_seconds = j.value("calib_seconds", 0.0);
    RETURN_IF_ERROR(Validate(b));
    return b;
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("baseline JSON is malformed: ", e.what()));
  } catch (const std::exception& e) {
    // e.g. bad_alloc for absurd sizes: a bad cache file must not throw out of core.
    return absl::DataLossError(absl::StrCat("baseline JSON cannot be read: ", e.what()));
  }
}

absl::Status SaveBaseline(const Baseline& b, const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return ErrnoStatus(ec.value(), "cannot create baseline cache", dir);
  // Temporary files of writers that were killed; removing them is a courtesy,
  // so a failure does not cost the baseline its place in the cache.
  (void)RemoveStaleStaging(dir);
  return WriteFileAtomic(dir / ("baseline-" + b.key + ".json"), BaselineToJson(b).dump() + "\n");
}

absl::StatusOr<Baseline> LoadBaseline(const std::filesystem::path& dir, const std::string& key) {
  auto path = dir / ("baseline-" + key + ".json");
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return absl::DataLossError(absl::StrCat(path.string(), ": not valid JSON"));
  auto b = BaselineFromJson(j);
  if (!b.ok()) return absl::DataLossError(absl::StrCat(path.string(), ": ", b.status().message()));
  // The inputs must hash to the key: an edited or damaged "inputs" block would
  // otherwise pass for a baseline of other settings.
  ASSIGN_OR_RETURN(std::string actual, BaselineKey(b->inputs));
  if (b->key != key || actual != key) {
    return absl::DataLossError(
        absl::StrCat(path.string(), ": key mismatch (file says ", b->key, ", its inputs hash to ", actual, ")"));
  }
  return b;
}

}  // namespace autoquant
