#include "core/scheme/manifests.h"

#include <algorithm>
#include <string_view>
#include <unordered_set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/util/dir_handle.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
using json = nlohmann::json;

namespace {

// The selection and the rules that turned it into the plan, in words a
// reader can check the groups against.
ojson SelectionJson(const Plan& p, const SchemeRecord& r) {
  ojson j;
  std::vector<std::string> rules;
  if (p.coverage) {
    j["kind"] = "coverage";
    j["coverage"] = *p.coverage;
    rules.push_back(
        "coverage X: the n = floor(X * N + 0.5) least-sensitive enabled groups (sensitivity_ranking order, "
        "N = enabled groups) get the most aggressive format, the rest stay in the base dtype");
  } else if (p.target_bits) {
    j["kind"] = "effective_bits";
    j["effective_bits"] = *p.target_bits;
    rules.push_back(
        "effective_bits B: exact search over the enabled groups' formats for the least total score with "
        "average weight bits <= B");
  } else {
    j["kind"] = "coverage_manifest";
    rules.push_back(
        "coverage manifest: its selected_layers, minus disabled groups, get the most aggressive format; it must "
        "partition the group keys");
  }
  std::vector<std::string> from_manifest;
  const std::unordered_set<std::string_view> from_request(r.disabled_by_flag.begin(), r.disabled_by_flag.end());
  for (const auto& pat : p.disabled_layers) {
    if (!from_request.count(pat)) from_manifest.push_back(pat);
  }
  j["disabled_layers"] = p.disabled_layers;
  j["disabled_layers_sources"] = {{"request", r.disabled_by_flag}, {"coverage_manifest", from_manifest}};
  rules.push_back(
      "disabled_layers: fnmatch patterns matched against every member Linear's module name, relative to the "
      "inner model and full; a match on any member disables the whole group (ModelOpt's rule); the request's "
      "patterns and the coverage manifest's are merged");
  j["rules"] = rules;
  return j;
}

}  // namespace

ojson QuantManifestJson(const Baseline& b, const Plan& p, const SchemeRecord& r) {
  ojson j;
  j["scheme"] = r.scheme;
  j["producer"] = {{"name", "autoquant"}, {"version", AUTOQUANT_VERSION}};
  j["format"] = r.format;
  // Lets a re-attempt of the same job recognise a scheme its cut-off predecessor already published.
  if (!r.job_id.empty()) j["job_id"] = r.job_id;
  j["baseline_key"] = b.key;
  j["method"] = ScoreMethodName(b.inputs.method);
  j["formats"] = ojson::array();
  for (Format f : b.formats) j["formats"].push_back(RecipeString(f));
  j["effective_bits"] = p.effective_bits;
  j["constraints"] = ojson::object();
  if (p.target_bits) j["constraints"]["effective_bits"] = *p.target_bits;
  if (p.coverage) j["coverage"] = *p.coverage;
  j["selection"] = SelectionJson(p, r);
  j["num_groups"] = b.groups.size();
  j["num_quantized"] = p.num_quantized(b);
  j["total_weight_numel"] = b.total_weight_numel;
  j["sensitivity_ranking"] = ojson::array();
  for (size_t r : b.ranking) j["sensitivity_ranking"].push_back(b.groups[r].key);
  ojson groups = ojson::object();
  for (size_t g = 0; g < b.groups.size(); ++g) {
    ojson scores = ojson::object(), costs = ojson::object();
    for (size_t f = 0; f < b.formats.size(); ++f) {
      scores[FormatName(b.formats[f])] = b.scores[g][f];
      costs[FormatName(b.formats[f])] = b.costs[g][f];
    }
    groups[b.groups[g].key] = {{"modules", b.groups[g].modules},
                               {"weight_numel", b.groups[g].weight_numel},
                               {"scores", scores},
                               {"costs", costs},
                               {"chosen", FormatName(b.formats[p.format[g]])},
                               {"disabled", bool(p.disabled[g])},
                               {"disabled_by", p.disabled_by.empty() ? std::vector<std::string>{} : p.disabled_by[g]}};
  }
  j["groups"] = groups;
  j["integrity"] = IntegrityJson(r.digests);
  return j;
}

ojson CoverageManifestJson(const Baseline& b, const Plan& p, const std::string& scheme) {
  CoverageManifest m = CoverageOf(p, b);
  ojson j;
  j["scheme"] = scheme;
  j["baseline_key"] = b.key;
  if (p.coverage) j["coverage"] = *p.coverage;
  j["selected_layers"] = m.selected_layers;
  j["dropped_layers"] = m.dropped_layers;
  // The seeds' field: fed back as --coverage-manifest, the same groups stay disabled.
  j["disabled_layers"] = p.disabled_layers;
  return j;
}

ojson SearchStateJson(const Baseline& b, const Plan& p) {
  ojson stats = ojson::object();
  ojson recipe = ojson::object();
  for (size_t g = 0; g < b.groups.size(); ++g) {
    ojson formats = ojson::array(), scores = ojson::array(), costs = ojson::array();
    for (size_t f = 0; f < b.formats.size(); ++f) {
      formats.push_back(RecipeString(b.formats[f]));
      scores.push_back(b.scores[g][f]);
      costs.push_back(b.costs[g][f]);
    }
    stats[b.groups[g].key] = {{"formats", formats},
                              {"scores", scores},
                              {"costs", costs},
                              {"module_names", b.groups[g].modules},
                              {"is_fixed", !bool(p.candidate[g])}};
    recipe[b.groups[g].key] = RecipeString(b.formats[p.format[g]]);
  }
  ojson j;
  j["method"] = ScoreMethodName(b.inputs.method);
  j["candidate_stats"] = stats;
  j["best"] = {{"recipe", recipe},
               {"constraints", {{"effective_bits", p.effective_bits}}},
               {"score", p.total_score},
               {"is_satisfied", !p.target_bits || p.effective_bits <= *p.target_bits + 1e-9}};
  j["cost_denominator"] = b.total_weight_numel;
  return j;
}

std::string SensitivityMarkdown(const Baseline& b, const Plan& p, const std::string& scheme) {
  std::string out = absl::StrFormat(
      "# Per-layer sensitivity: %s\n\nMethod `%s`, baseline `%s`. Effective bits %.4f; %d of %d groups "
      "quantized.\nGroups are ranked least sensitive first by their %s score.\n\n",
      scheme, ScoreMethodName(b.inputs.method), b.key.substr(0, 12), p.effective_bits, p.num_quantized(b),
      b.groups.size(), FormatName(b.formats[0]));
  if (!p.disabled_layers.empty()) {
    absl::StrAppend(&out,
                    "Disabled by `disabled_layers` (fnmatch on member module names; one match disables the "
                    "group): `",
                    absl::StrJoin(p.disabled_layers, "`, `"), "`.\n\n");
  }
  absl::StrAppendFormat(&out,
                        "| rank | group | modules | params | score %s | chosen |\n|---:|---|---:|---:|---:|---|\n",
                        FormatName(b.formats[0]));
  for (size_t r = 0; r < b.ranking.size(); ++r) {
    size_t g = b.ranking[r];
    absl::StrAppendFormat(&out, "| %d | `%s` | %d | %d | %.6g | %s%s |\n", r + 1, b.groups[g].key,
                          b.groups[g].modules.size(), b.groups[g].weight_numel, b.scores[g][0],
                          FormatName(b.formats[p.format[g]]), p.disabled[g] ? " (disabled)" : "");
  }
  return out;
}

absl::Status WriteLayerSensitivity(const fs::path& dir, const Baseline& b, const Plan& p, const SchemeRecord& r) {
  const std::string& scheme = r.scheme;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return ErrnoStatus(ec.value(), "cannot create", dir);
  RETURN_IF_ERROR(WriteFileAtomic(dir / (scheme + "_quant_manifest.json"), QuantManifestJson(b, p, r).dump(2) + "\n"));
  RETURN_IF_ERROR(WriteFileAtomic(dir / (scheme + "_coverage_from_baseline.json"),
                                  CoverageManifestJson(b, p, scheme).dump(2) + "\n"));
  RETURN_IF_ERROR(WriteFileAtomic(dir / (scheme + "_search_state.json"), SearchStateJson(b, p).dump(2) + "\n"));
  return WriteFileAtomic(dir / "per-layer-sensitivity.md", SensitivityMarkdown(b, p, scheme));
}

absl::StatusOr<SchemeManifest> ReadSchemeManifest(const fs::path& scheme_dir) {
  fs::path dir = scheme_dir / "layer-sensitivity";
  std::error_code ec;
  fs::path found;
  if (fs::is_directory(dir, ec)) {
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (!absl::EndsWith(e.path().filename().string(), "_quant_manifest.json")) continue;
      if (!found.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(dir.string(), " holds more than one *_quant_manifest.json"));
      }
      found = e.path();
    }
  }
  if (found.empty()) {
    return absl::NotFoundError(absl::StrCat(scheme_dir.string(), " has no layer-sensitivity/*_quant_manifest.json"));
  }
  if (std::uintmax_t size = fs::file_size(found, ec); !ec && size > std::uintmax_t{kMaxSchemeJsonBytes}) {
    return absl::ResourceExhaustedError(
        absl::StrCat(found.string(), " holds ", size, " bytes, more than the ", kMaxSchemeJsonBytes, " read"));
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(found));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(found.string(), ": not valid JSON"));
  SchemeManifest m;
  try {
    m.scheme = j.value("scheme", "");
    if (j.contains("producer") && j["producer"].is_object()) m.producer = j["producer"].value("name", "");
    m.baseline_key = j.value("baseline_key", "");
    m.job_id = j.value("job_id", "");
    m.effective_bits = j.value("effective_bits", 16.0);
    if (j.contains("coverage") && j["coverage"].is_number()) m.coverage = j["coverage"].get<double>();
    for (const auto& [key, g] : j.at("groups").items()) {
      absl::StatusOr<Format> chosen = ParseFormat(g.at("chosen").get<std::string>());
      if (!chosen.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(found.string(), ": group '", key, "': ", chosen.status().message()));
      }
      m.groups[key] = {*chosen, g.at("modules").get<std::vector<std::string>>()};
      if (g.contains("scores") && g.at("scores").is_object()) {
        for (const auto& [name, _] : g.at("scores").items()) {
          absl::StatusOr<Format> f = ParseFormat(name);
          if (f.ok() && IsQuantized(*f) &&
              std::find(m.search_space.begin(), m.search_space.end(), *f) == m.search_space.end()) {
            m.search_space.push_back(*f);
          }
        }
      }
    }
    {
      absl::StatusOr<std::vector<Format>> sorted = CandidateFormats(m.search_space);
      if (sorted.ok()) m.search_space.assign(sorted->begin(), sorted->end() - 1);
    }
    m.num_groups = j.value("num_groups", static_cast<int>(m.groups.size()));
    m.num_quantized = j.value("num_quantized", 0);
    if (j.contains("integrity")) {
      const auto& in = j.at("integrity");
      if (in.at("algorithm").get<std::string>() != "sha256") {
        return absl::InvalidArgumentError(absl::StrCat(found.string(), ": unknown integrity algorithm"));
      }
      TensorDigests d;
      for (const auto& [name, t] : in.at("tensors").items()) {
        d[name] = {t.at("file").get<std::string>(), t.at("sha256").get<std::string>()};
      }
      m.integrity = std::move(d);
    }
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(found.string(), ": malformed quant manifest: ", e.what()));
  }
  return m;
}

absl::Status RecogniseSchemeOutput(const fs::path& dir) {
  auto m = ReadSchemeManifest(dir);
  if (!m.ok()) return m.status();
  if (m->producer != "autoquant") {
    return absl::FailedPreconditionError(
        absl::StrCat("its quant manifest names producer '", m->producer, "', not autoquant"));
  }
  return absl::OkStatus();
}

}  // namespace autoquant
