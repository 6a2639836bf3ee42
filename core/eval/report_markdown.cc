// ReportMarkdown: report.md from report.json's content.
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/eval/report.h"

namespace autoquant {
namespace {

using ojson = nlohmann::ordered_json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string Short(const std::string& fingerprint) { return fingerprint.substr(0, 12); }

double Num(const ojson& v) { return v.is_number() ? v.get<double>() : kNaN; }

std::string Fmt(double v) { return std::isfinite(v) ? absl::StrFormat("%.4g", v) : "n/a"; }
std::string FmtSigned(double v) { return std::isfinite(v) ? absl::StrFormat("%+.4g", v) : "n/a"; }

std::string WithInterval(const ojson& value, const ojson& ci, bool signed_value) {
  std::string s = signed_value ? FmtSigned(Num(value)) : Fmt(Num(value));
  if (ci.is_array() && ci.size() == 2 && !(Num(ci[0]) == 0 && Num(ci[1]) == 0 && Num(value) == 0)) {
    absl::StrAppend(&s, " [", Fmt(Num(ci[0])), ", ", Fmt(Num(ci[1])), "]");
  }
  return s;
}

std::string Row(const ojson& p) {
  const ojson& ppl = p["perplexity"];
  const ojson& mse = p["logit_mse_last_token"];
  const ojson& kl = p["logit_kl_last_token"];
  std::string agreement = "—";
  const ojson& g = p["generation"];
  if (g.is_object() && g.contains("agreement")) {
    agreement = absl::StrCat(Fmt(Num(g["agreement"])), "/", g.value("max_new_tokens", 0));
    if (!g.value("all_finite", true)) absl::StrAppend(&agreement, " (NON-FINITE)");
  }
  // Groups per format, most aggressive first as the set lists them ("12 NVFP4, 3 FP8"); "—" for the base.
  std::string groups = "—";
  if (p.contains("groups_by_format") && p["groups_by_format"].is_object() && !p["groups_by_format"].empty()) {
    std::vector<std::string> parts;
    for (absl::string_view name : absl::StrSplit(p.value("formats", ""), '+')) {
      const std::string n(name);
      if (p["groups_by_format"].contains(n))
        parts.push_back(absl::StrCat(p["groups_by_format"][n].get<int64_t>(), " ", n));
    }
    groups = absl::StrJoin(parts, ", ");
  }
  return absl::StrCat("| ", p.value("scheme", ""), " | ", Fmt(Num(p["coverage"]) * 100), " % | ",
                      Fmt(Num(p["effective_bits"])), " | ", groups, " | ", Fmt(Num(ppl["scheme"])), " | ",
                      WithInterval(ppl["delta"], ppl["delta_ci95"], true), " | ",
                      WithInterval(mse["mean"], mse["ci95"], false), " | ", WithInterval(kl["mean"], kl["ci95"], false),
                      " | ", agreement, " |\n");
}

}  // namespace

std::string ReportMarkdown(const ojson& report) {
  std::string md = absl::StrCat("<!-- ", kReportFormat, " -->\n");
  const ojson& points = report["points"];
  const ojson& eval = report["eval_set"];
  absl::StrAppend(&md, "# Coverage trade-off: ", points.size(), points.size() == 1 ? " scheme" : " schemes",
                  " against the base model\n\n");
  absl::StrAppend(&md, "Eval set `", eval.value("path", ""), "` (", Short(eval.value("fingerprint", "")),
                  "): ", eval.value("samples", 0), " samples, ", eval.value("samples_with_images", 0),
                  " with images; base model ", Short(report.value("base_model_fingerprint", "")), ".");
  if (report.value("inputs_mixed", false)) {
    absl::StrAppend(&md, " **Mixed inputs: see the findings.**");
  }
  absl::StrAppend(&md,
                  " Logit MSE and KL(base ‖ scheme) at the last token; Δppl = scheme − base. Brackets: 95 % "
                  "intervals.\n\n");
  absl::StrAppend(&md,
                  "| scheme | coverage | eff. bits | groups per format | ppl | Δppl [95 % CI] | logit MSE [95 % CI] | "
                  "KL [95 % CI] | gen agreement |\n"
                  "|---|---:|---:|---|---:|---:|---:|---:|---:|\n");
  absl::StrAppend(&md, Row(report["base"]));
  for (const ojson& p : points) absl::StrAppend(&md, Row(p));

  absl::StrAppend(&md, "\n## Findings\n\n");
  const ojson& f = report["findings"];
  int n = 0;
  // The loudest first: identical schemes make the whole sweep meaningless.
  auto list = [&](const char* key, bool bold) {
    if (!f.contains(key)) return;
    for (const ojson& item : f[key]) {
      const char* b = bold ? "**" : "";
      absl::StrAppend(&md, "- ", b, item.value("message", ""), b, "\n");
      ++n;
    }
  };
  list("identical_schemes", true);
  list("mixed_inputs", true);
  list("non_finite_generation", true);
  if (f.contains("inversions")) {
    for (const ojson& item : f["inversions"]) {
      absl::StrAppend(&md, "- Inversion ", item.value("within_noise", false) ? "(within noise)" : "(**beyond noise**)",
                      ": ", item.value("message", ""), "\n");
      ++n;
    }
  }
  if (n == 0) {
    absl::StrAppend(&md, "- none: more coverage never degrades less, and no two schemes are identical\n");
  }
  absl::StrAppend(&md,
                  "\n![Coverage trade-off: KL, logit MSE and perplexity delta against coverage and effective "
                  "bits](report.png)\n\n[report.png](report.png) · [report.json](report.json)\n");
  return md;
}

std::vector<std::string> ReportFindingLines(const ojson& report) {
  std::vector<std::string> lines;
  const ojson& f = report["findings"];
  for (const char* key : {"identical_schemes", "mixed_inputs", "non_finite_generation"}) {
    if (!f.contains(key)) continue;
    for (const ojson& item : f[key]) lines.push_back(item.value("message", ""));
  }
  if (f.contains("inversions")) {
    for (const ojson& item : f["inversions"]) {
      lines.push_back(absl::StrCat("inversion ",
                                   item.value("within_noise", false) ? "(within noise)" : "(beyond noise)", ": ",
                                   item.value("message", "")));
    }
  }
  return lines;
}

}  // namespace autoquant
