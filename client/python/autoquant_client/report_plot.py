"""The coverage trade-off report as data and as a figure.

`autoquant report SCHEME_DIR... --out DIR` writes `report.json` (format `autoquant.report.v1`: a base
point, one point per evaluated scheme ordered by coverage, and findings) and then draws `report.png`
by running this module. Evaluation scripts can read the same numbers:

    from autoquant_client.report_plot import load_report, plot
    report = load_report("sweep-report/report.json")
    for p in report.points:
        print(p.scheme, p.coverage, p.effective_bits, p.kl.mean, p.kl.ci95, p.perplexity_delta.mean)
    fig = plot(report, "sweep-report/report.png")

The figure: three rows (KL(base ‖ scheme) at the last token, logit MSE at the last token, perplexity
delta) by two columns (x = coverage in %, x = effective bits), one marker per scheme with its 95 %
interval as an error bar, the base model as a black star at coverage 0 / 16 bits, scheme names next to
their points, and a grey line through the points in x order. `plot(..., return_axes=True)` also returns
the axes and the coordinates it drew, so that a test (or a script) can check them.

Command line: `python -m autoquant_client.report_plot report.json report.png` (exit 2 when the report
cannot be read or matplotlib is missing: `pip install './client/python[plot]'`).

Needs matplotlib (the `plot` extra) for `plot` only; `load_report` needs nothing beyond the standard
library, and `autoquant_client` itself does not import this module.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import sys
import tempfile
from typing import Dict, List, Optional, Tuple, Union

PathLike = Union[str, os.PathLike]

FORMAT = "autoquant.report.v1"

# The figure's size: 1200 x 1350 pixels.
FIG_WIDTH_IN, FIG_HEIGHT_IN, DPI = 12.0, 13.5, 100

# (report.json key, attribute of ReportPoint, y-axis label)
METRICS = (
    ("logit_kl_last_token", "kl", "KL(base ‖ scheme), last token [nats]"),
    ("logit_mse_last_token", "mse", "logit MSE, last token [logit²]"),
    ("perplexity_delta", "perplexity_delta", "Δ perplexity (scheme − base) [ppl]"),
)
# (name, x-axis label)
X_AXES = (
    ("coverage", "coverage [% of quantization groups in FP8]"),
    ("effective_bits", "effective bits [bits per weight]"),
)


class ReportError(ValueError):
    """report.json is not an autoquant.report.v1 report; the message names the file and field."""


@dataclasses.dataclass(frozen=True)
class Metric:
    """A metric's mean (NaN where the report has null: a non-finite value) and its 95 % interval."""
    mean: float
    ci95: Tuple[float, float]


@dataclasses.dataclass(frozen=True)
class ReportPoint:
    scheme: str
    coverage: float  # fraction in [0, 1]
    effective_bits: float
    perplexity: float  # the scheme's (the base's, for the base point)
    kl: Metric
    mse: Metric
    perplexity_delta: Metric
    agreement: Optional[float]  # mean common prefix of generated tokens with the base; None for the base
    max_new_tokens: Optional[int]
    all_finite: Optional[bool]
    is_base: bool = False
    dir: Optional[str] = None
    formats: str = "FP8"  # the search space ("NVFP4+FP8"): one curve per format set

    def x(self, axis: str) -> float:
        """The point's x in an X_AXES column: coverage in %, or effective bits."""
        return self.coverage * 100.0 if axis == "coverage" else self.effective_bits

    def metric(self, key: str) -> Metric:
        """The metric of report.json key `key` (METRICS)."""
        return getattr(self, next(attr for k, attr, _ in METRICS if k == key))


@dataclasses.dataclass(frozen=True)
class Report:
    path: Optional[pathlib.Path]
    eval_set: dict  # path, fingerprint, samples, samples_with_images
    base_model_fingerprint: str
    inputs_mixed: bool
    base: ReportPoint
    points: List[ReportPoint]
    findings: dict  # identical_schemes, inversions, mixed_inputs, non_finite_generation (lists)
    raw: dict  # report.json as parsed

    @property
    def all_points(self) -> List[ReportPoint]:
        """The base first, then the schemes (by coverage)."""
        return [self.base] + list(self.points)


def _field(obj, key: str, where: str, source: str):
    if not isinstance(obj, dict) or key not in obj:
        raise ReportError(f"{source}: field '{where}{key}' is missing")
    return obj[key]


def _num(value, where: str, source: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(f"{source}: field '{where}' is not a number")
    return float(value)


def _metric(obj: dict, key: str, mean_key: str, ci_key: str, where: str, source: str) -> Metric:
    m = _field(obj, key, where, source)
    mean = _num(_field(m, mean_key, f"{where}{key}.", source), f"{where}{key}.{mean_key}", source)
    ci = _field(m, ci_key, f"{where}{key}.", source)
    if not isinstance(ci, list) or len(ci) != 2:
        raise ReportError(f"{source}: field '{where}{key}.{ci_key}' is not a [low, high] pair")
    return Metric(mean, (_num(ci[0], f"{where}{key}.{ci_key}[0]", source),
                         _num(ci[1], f"{where}{key}.{ci_key}[1]", source)))


def _point(obj: dict, where: str, source: str, is_base: bool) -> ReportPoint:
    ppl = _field(obj, "perplexity", where, source)
    gen = obj.get("generation") if isinstance(obj, dict) else None
    agreement = max_new = finite = None
    if isinstance(gen, dict) and "agreement" in gen:
        agreement = _num(gen["agreement"], f"{where}generation.agreement", source)
        max_new = gen.get("max_new_tokens")
        finite = gen.get("all_finite")
    return ReportPoint(
        scheme=str(_field(obj, "scheme", where, source)),
        coverage=_num(_field(obj, "coverage", where, source), f"{where}coverage", source),
        effective_bits=_num(_field(obj, "effective_bits", where, source), f"{where}effective_bits", source),
        perplexity=_num(_field(ppl, "scheme", f"{where}perplexity.", source), f"{where}perplexity.scheme", source),
        kl=_metric(obj, "logit_kl_last_token", "mean", "ci95", where, source),
        mse=_metric(obj, "logit_mse_last_token", "mean", "ci95", where, source),
        perplexity_delta=_metric(obj, "perplexity", "delta", "delta_ci95", where, source),
        agreement=agreement, max_new_tokens=max_new, all_finite=finite, is_base=is_base, dir=obj.get("dir"),
        formats=str(obj.get("formats", "FP8")) if isinstance(obj, dict) else "FP8")


def parse_report(data: dict, source: str = "report.json") -> Report:
    """A Report from report.json's parsed content; ReportError names `source` and the field."""
    if not isinstance(data, dict):
        raise ReportError(f"{source}: not a JSON object")
    fmt = data.get("format")
    if fmt != FORMAT:
        raise ReportError(f"{source}: field 'format' is {fmt!r}, not {FORMAT!r}")
    points = _field(data, "points", "", source)
    if not isinstance(points, list):
        raise ReportError(f"{source}: field 'points' is not an array")
    eval_set = _field(data, "eval_set", "", source)
    return Report(path=None, eval_set=eval_set, base_model_fingerprint=str(data.get("base_model_fingerprint", "")),
                  inputs_mixed=bool(data.get("inputs_mixed", False)),
                  base=_point(_field(data, "base", "", source), "base.", source, is_base=True),
                  points=[_point(p, f"points[{i}].", source, is_base=False) for i, p in enumerate(points)],
                  findings=data.get("findings", {}), raw=data)


def load_report(path: PathLike) -> Report:
    """Reads report.json. FileNotFoundError for a missing file, ReportError for anything malformed."""
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None
    return dataclasses.replace(parse_report(data, str(path)), path=path)


def _title(report: Report) -> str:
    es = report.eval_set
    name = pathlib.Path(str(es.get("path", ""))).name or "?"
    n = len(report.points)
    title = (f"Coverage trade-off: {n} scheme{'s' if n != 1 else ''} against the base model\n"
             f"eval set {name}: {es.get('samples', '?')} samples ({es.get('samples_with_images', '?')} with images); "
             f"error bars: 95 % intervals")
    if report.inputs_mixed:
        title += "\nMIXED INPUTS: schemes were evaluated on different eval sets or base models"
    return title


def _finite(v: float) -> bool:
    return v is not None and math.isfinite(v)


def plot(report: Union[Report, PathLike], out_path: Optional[PathLike] = None, *, return_axes: bool = False):
    """Draws the trade-off figure; writes it to `out_path` (PNG, atomically) when given.

    Returns the matplotlib Figure; with `return_axes=True`, `(figure, axes, plotted)` where `axes` is the
    3 x 2 array (rows: METRICS, columns: X_AXES) and `plotted[(metric_key, x_axis)][scheme] = (x, y, low,
    high)` for every point drawn there ("base" included), in the data coordinates of the axes.
    """
    if not isinstance(report, Report):
        report = load_report(report)
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    fig = Figure(figsize=(FIG_WIDTH_IN, FIG_HEIGHT_IN), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(METRICS), len(X_AXES), squeeze=False)
    colours = [f"C{i % 10}" for i in range(len(report.points))]
    plotted: Dict[Tuple[str, str], Dict[str, Tuple[float, float, float, float]]] = {}
    for row, (key, _, ylabel) in enumerate(METRICS):
        for col, (axis, xlabel) in enumerate(X_AXES):
            ax = axes[row][col]
            here: Dict[str, Tuple[float, float, float, float]] = {}
            base = report.base
            bm = base.metric(key)
            ax.plot([base.x(axis)], [bm.mean], linestyle="none", marker="*", markersize=15, color="black",
                    zorder=3, label="base (unquantized, 16-bit)")
            ax.annotate("base", (base.x(axis), bm.mean), textcoords="offset points", xytext=(6, 6), fontsize=8,
                        fontweight="bold")
            here["base"] = (base.x(axis), bm.mean, bm.mean, bm.mean)
            for p, colour in zip(report.points, colours):
                m = p.metric(key)
                x, y = p.x(axis), m.mean
                low, high = m.ci95
                below = y - low if _finite(low) and _finite(y) else 0.0
                above = high - y if _finite(high) and _finite(y) else 0.0
                ax.errorbar([x], [y], yerr=[[max(below, 0.0)], [max(above, 0.0)]], fmt="o", color=colour,
                            markersize=6, capsize=4, elinewidth=1.2, zorder=2, label=p.scheme)
                if _finite(x) and _finite(y):
                    ax.annotate(p.scheme, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8,
                                color=colour)
                here[p.scheme] = (x, y, low, high)
            # One curve per format set (FP8 alone, NVFP4 + FP8, ...), each through the base point.
            sets = sorted({p.formats for p in report.points})
            for n, fset in enumerate(sets):
                members = [here["base"]] + [here[p.scheme] for p in report.points if p.formats == fset]
                trend = sorted((v[0], v[1]) for v in members if _finite(v[0]) and _finite(v[1]))
                if len(trend) > 1:
                    grey = "0.8" if len(sets) == 1 else ("0.35", "0.55", "0.7")[n % 3]
                    ax.plot([t[0] for t in trend], [t[1] for t in trend], color=grey, linewidth=1,
                            linestyle="-" if n == 0 else "--", zorder=1,
                            label="_trend" if len(sets) == 1 else f"curve: {fset}")
            ax.axhline(0.0, color="0.6", linewidth=0.6, linestyle=":", zorder=0)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            plotted[(key, axis)] = here
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=9)
    # Identical schemes make the whole sweep meaningless: the title says so, in red.
    identical = report.findings.get("identical_schemes") or []
    title = _title(report)
    for f in identical:
        title += "\nIDENTICAL: " + " = ".join(str(s) for s in f.get("schemes", []))
    fig.suptitle(title, fontsize=11, color="red" if identical else "black")
    if out_path is not None:
        save(fig, out_path)
    return (fig, axes, plotted) if return_axes else fig


def save(fig, out_path: PathLike) -> None:
    """Writes `fig` as PNG to `out_path` atomically (a temporary file beside it, renamed into place),
    tagged with the report format so that `autoquant report --overwrite` recognises it."""
    out = pathlib.Path(out_path)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.tmp-{os.getpid()}-")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI, metadata={"Software": "autoquant", "autoquant.format": FORMAT})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoquant_client.report_plot",
                                     description="Draws report.png from autoquant report's report.json.")
    parser.add_argument("report_json")
    parser.add_argument("out_png")
    args = parser.parse_args(argv)
    prog = "autoquant_client.report_plot"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"{prog}: matplotlib is not installed: pip install './client/python[plot]' (from the autoquant "
              f"repository)", file=sys.stderr)
        return 2
    try:
        plot(args.report_json, args.out_png)
    except (ReportError, FileNotFoundError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
