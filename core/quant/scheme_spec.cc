#include "core/quant/scheme_spec.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/quant/scheme_name.h"
#include "core/util/json_int.h"
#include "core/util/status_macros.h"

namespace autoquant {
using json = nlohmann::json;

absl::string_view ScoreMethodName(ScoreMethod m) { return m == ScoreMethod::kGradient ? "gradient" : "kl_div"; }

absl::StatusOr<ScoreMethod> ParseScoreMethod(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "gradient") return ScoreMethod::kGradient;
  if (n == "kl_div" || n == "kl-div") return ScoreMethod::kKlDiv;
  return absl::InvalidArgumentError(absl::StrCat("unknown score method '", name, "' (gradient | kl_div)"));
}

absl::string_view ExportFormatName(ExportFormat f) {
  return f == ExportFormat::kModelOpt ? "modelopt" : "compressed-tensors";
}

absl::StatusOr<ExportFormat> ParseExportFormat(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "modelopt") return ExportFormat::kModelOpt;
  if (n == "compressed-tensors" || n == "compressed_tensors") return ExportFormat::kCompressedTensors;
  return absl::InvalidArgumentError(absl::StrCat("unknown export format '", name, "' (modelopt | compressed-tensors)"));
}

absl::string_view ExportLayoutName(ExportLayout layout) {
  return layout == ExportLayout::kShared ? "shared" : "standalone";
}

absl::StatusOr<ExportLayout> ParseExportLayout(absl::string_view name) {
  if (name == "standalone") return ExportLayout::kStandalone;
  if (name == "shared") return ExportLayout::kShared;
  return absl::InvalidArgumentError(absl::StrCat("unknown output layout '", name, "' (shared | standalone)"));
}

namespace {
constexpr Phase kPhases[] = {Phase::kLoad,   Phase::kCalibrate, Phase::kScore,
                             Phase::kSearch, Phase::kExport,    Phase::kEvaluate};
}  // namespace

absl::string_view PhaseName(Phase p) {
  switch (p) {
    case Phase::kLoad:
      return "load";
    case Phase::kCalibrate:
      return "calibrate";
    case Phase::kScore:
      return "score";
    case Phase::kSearch:
      return "search";
    case Phase::kExport:
      return "export";
    case Phase::kEvaluate:
      return "evaluate";
  }
  return "?";
}

absl::StatusOr<Phase> ParsePhase(absl::string_view name) {
  for (Phase p : kPhases) {
    if (PhaseName(p) == name) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown phase '", name, "' (load | calibrate | score | search | export | evaluate)"));
}

absl::Status ValidateSelection(const SchemeSelection& s) {
  const int given =
      int(s.coverage.has_value()) + int(s.coverage_manifest.has_value()) + int(s.effective_bits.has_value());
  if (given != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(given == 0 ? "no selection given" : "more than one selection given",
                     ": give exactly one of coverage (0.1, top10 or 10%; 1 quantizes every group), "
                     "coverage_manifest (a file of selected and dropped group keys) and effective_bits "
                     "(a target average of weight bits)"));
  }
  if (s.coverage && !(*s.coverage > 0 && *s.coverage <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("coverage ", *s.coverage,
                     " is outside (0, 1]: a coverage is a fraction in (0, 1] (0.1 quantizes the 10% least-sensitive "
                     "groups, 1 every group), topXX or XX% with XX in (0, 100]"));
  }
  if (s.effective_bits && !(*s.effective_bits > 0 && *s.effective_bits < 16)) {
    return absl::InvalidArgumentError(
        absl::StrCat("effective_bits ", *s.effective_bits,
                     " is outside (0, 16): the target is the average weight bits, below the base's 16"));
  }
  return absl::OkStatus();
}

absl::Status ValidateSchemeSpec(const SchemeSpec& spec) {
  if (!spec.scheme.empty()) {
    if (absl::Status name = ValidateSchemeName(spec.scheme); !name.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("scheme: ", name.message()));
    }
  }
  RETURN_IF_ERROR(ValidateSelection(spec.selection));
  if (spec.calib_steps < 0 || spec.score_steps < 0) {
    return absl::InvalidArgumentError(absl::StrCat("calib_steps ", spec.calib_steps, " and score_steps ",
                                                   spec.score_steps, ": each must be >= 0 (0 = the default)"));
  }
  if (spec.batch_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size ", spec.batch_size, " must be >= 0 (0 = the daemon's or the engine's default)"));
  }
  if (absl::Status f = CandidateFormats(spec.formats).status(); !f.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("formats: ", f.message()));
  }
  if (spec.formats.size() > 1 && !spec.selection.effective_bits) {
    return absl::InvalidArgumentError(
        absl::StrCat("formats lists ", spec.formats.size(),
                     " formats but the selection is a coverage: a coverage picks groups for one format; with several "
                     "formats give effective_bits (the search picks a format per group), or name one format"));
  }
  return absl::OkStatus();
}

void SchemeSpecToJson(const SchemeSpec& spec, json* j) {
  const SchemeSelection& s = spec.selection;
  (*j)["scheme"] = spec.scheme;
  (*j)["coverage"] = s.coverage ? json(*s.coverage) : json(nullptr);
  if (s.coverage_manifest) {
    (*j)["coverage_manifest"] = {{"selected_layers", s.coverage_manifest->selected_layers},
                                 {"dropped_layers", s.coverage_manifest->dropped_layers},
                                 {"disabled_layers", s.coverage_manifest->disabled_layers}};
  } else {
    (*j)["coverage_manifest"] = nullptr;
  }
  (*j)["disabled_layers"] = s.disabled_layers;
  (*j)["effective_bits"] = s.effective_bits ? json(*s.effective_bits) : json(nullptr);
  (*j)["method"] = ScoreMethodName(spec.method);
  (*j)["format"] = ExportFormatName(spec.format);
  // Only when set, so that the JSON of specs stored before layouts existed is unchanged.
  if (spec.layout) (*j)["layout"] = ExportLayoutName(*spec.layout);
  if (spec.batch_size != 0) (*j)["batch_size"] = spec.batch_size;
  (*j)["overwrite"] = spec.overwrite;
  (*j)["include_vision"] = spec.include_vision;
  (*j)["calib_steps"] = spec.calib_steps;
  (*j)["score_steps"] = spec.score_steps;
  // Only when set, so that the JSON of FP8-only specs is unchanged.
  if (!spec.formats.empty()) {
    json names = json::array();
    for (Format f : spec.formats) names.push_back(FormatName(f));
    (*j)["formats"] = std::move(names);
  }
}

absl::StatusOr<SchemeSpec> SchemeSpecFromJson(const json& j) {
  SchemeSpec spec;
  SchemeSelection& s = spec.selection;
  std::string method, format, layout;
  std::vector<std::string> formats;
  try {
    spec.scheme = j.at("scheme").get<std::string>();
    if (!j.at("coverage").is_null()) s.coverage = j.at("coverage").get<double>();
    const json& m = j.at("coverage_manifest");
    if (!m.is_null()) {
      s.coverage_manifest = CoverageManifest{
          .selected_layers = m.at("selected_layers").get<std::vector<std::string>>(),
          .dropped_layers = m.at("dropped_layers").get<std::vector<std::string>>(),
          .disabled_layers = m.value("disabled_layers", std::vector<std::string>{}),
      };
    }
    s.disabled_layers = j.at("disabled_layers").get<std::vector<std::string>>();
    if (!j.at("effective_bits").is_null()) s.effective_bits = j.at("effective_bits").get<double>();
    method = j.at("method").get<std::string>();
    format = j.at("format").get<std::string>();
    layout = j.value("layout", std::string());
    spec.batch_size = j.contains("batch_size") ? JsonInt<int>(j.at("batch_size")) : 0;
    spec.overwrite = j.at("overwrite").get<bool>();
    spec.include_vision = j.at("include_vision").get<bool>();
    spec.calib_steps = JsonInt<int>(j.at("calib_steps"));
    spec.score_steps = JsonInt<int>(j.at("score_steps"));
    formats = j.value("formats", std::vector<std::string>{});
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("stored job spec is malformed: ", e.what()));
  }
  auto data_loss = [](const absl::Status& st) {
    return absl::DataLossError(absl::StrCat("stored job spec is malformed: ", st.message()));
  };
  auto m = ParseScoreMethod(method);
  if (!m.ok()) return data_loss(m.status());
  spec.method = *m;
  for (const std::string& name : formats) {
    auto qf = ParseFormat(name);
    if (!qf.ok()) return data_loss(qf.status());
    spec.formats.push_back(*qf);
  }
  auto f = ParseExportFormat(format);
  if (!f.ok()) return data_loss(f.status());
  spec.format = *f;
  if (!layout.empty()) {
    auto l = ParseExportLayout(layout);
    if (!l.ok()) return data_loss(l.status());
    spec.layout = *l;
  }
  return spec;
}

}  // namespace autoquant
