"""Summarizes a bench/perf/perf.sh results directory into perf.json and perf.md: the figures of each
part that ran, the ratios the issue's targets name, and whether each target was met.

    python3 bench/perf/summarize.py OUT_DIR [MORE_DIRS ...]

Several directories (parts run in separate calls) are merged, the first one wins for a part found
twice. FLOP floor of calibration + scoring: the Linear FLOPs of the algorithm (attention score
FLOPs left out: under 5 % at 768 tokens), 2 * params * tokens per forward:
calibration = one forward of the language model over every token and of the vision tower over every
patch; gradient scoring = a no-grad forward, the per-layer recompute forward, the backward (2x) and
each Linear once more with FP8 inputs and weights (1x): 5 language-model forwards and one of the
vision tower. Divided by the measured bf16 GEMM ceiling (limits part)."""
import json
import pathlib
import statistics
import sys

BATCH = 4  # the batch size perf.sh runs both tools at


def load(dirs, rel):
    for d in dirs:
        p = d / rel
        if p.exists():
            try:
                return json.loads(p.read_text())
            except json.JSONDecodeError:
                return None
    return None


def linear_params(cfg: dict) -> tuple:
    """(language-model Linear params incl. lm_head, vision Linear params incl. the merger)."""
    h, inter, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = h // heads
    text = L * (h * h + 2 * h * kv * hd + h * h + 3 * h * inter) + h * cfg["vocab_size"]
    v = cfg["vision_config"]
    vh, vi, depth = v["hidden_size"], v["intermediate_size"], v["depth"]
    m = v.get("spatial_merge_size", 2) ** 2 * vh
    vision = depth * (3 * vh * vh + vh * vh + 3 * vh * vi) + m * m + m * v["out_hidden_size"]
    return text, vision


def job_rows(sweep: dict) -> list:
    rows = []
    for j in (sweep or {}).get("jobs", []):
        m = (j.get("result") or {}).get("metrics") or {}
        rows.append({"scheme": j.get("scheme"), "state": j.get("state"), "metrics": m,
                     "phases": j.get("phases", []), "baseline_reused": j.get("baseline_reused")})
    return rows


def print_kernels(path: pathlib.Path) -> int:
    """The kernels part: aq_baseline_bench's JSON as a few lines (on vs off, top device kernels)."""
    b = json.loads(path.read_text())
    for v in ("kernels_on", "kernels_off"):
        r = b.get(v)
        if not r:
            continue
        print(f"{v}: forward {r['forward_ms']:.1f} ms, calibrate {r['calibrate_ms_per_batch']:.1f} ms/batch, "
              f"score {r['score_ms_per_batch']:.1f} ms/batch, peak {r.get('peak_reserved_gb', 0):.1f} GB")
        for p in ("profile_forward", "profile_calibrate", "profile_score"):
            q = r.get(p)
            if not q:
                continue
            cls = ", ".join(f"{k} {c['ms']:.1f}/{c['count']}" for k, c in
                            sorted(q["classes"].items(), key=lambda kv: -kv[1]["ms"]))
            print(f"  {p}: wall {q['wall_ms']:.1f} ms, device busy {q['device_busy_ms']:.1f} ms, "
                  f"{q['device_activities']} device activities, {q['cpu_events']} cpu events; {cls}")
            for t in q["top"][:8]:
                print(f"    {t['ms']:8.2f} ms {t['count']:6d}x  {t['name'][:110]}")
        for k, g in r.get("score_by_graph_layers", {}).items():
            print(f"  score keeping {k} layers' graphs: {g['score_ms_per_batch']:.1f} ms/batch, "
                  f"peak {g['peak_reserved_gb']:.1f} GB, Spearman vs the default pass {g['spearman_vs_default']:.6f}")
    for k in ("speedup_forward", "speedup_calibrate", "speedup_score", "input_amax_equal", "input_amax_count",
              "input_amax_max_rel_diff", "weight_amax_equal", "score_spearman_on_vs_off", "score_max_rel_diff"):
        if k in b:
            print(f"{k}: {b[k]}")
    return 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--kernels":
        return print_kernels(pathlib.Path(sys.argv[2]))
    dirs = [pathlib.Path(a) for a in sys.argv[1:]]
    if not dirs:
        print(__doc__)
        return 2
    R = {"sources": [str(d) for d in dirs]}
    for d in dirs:
        for f in ("gpu.txt", "versions.txt"):
            if (d / f).exists() and f not in R:
                R[f.split(".")[0]] = (d / f).read_text().strip()
    limits = load(dirs, "limits.json")
    R["limits"] = limits
    checks = []

    def check(name, value, target, ok, note=""):
        checks.append({"target": name, "value": value, "goal": target, "met": ok, "note": note})

    shared = load(dirs, "shared/daemon-sweep.json")
    if shared:
        rows = job_rows(shared)
        S = shared.get("sweep", {})
        D = shared.get("daemon") or {}
        warm = [r["metrics"].get("export_seconds") for r in rows if r["baseline_reused"]]
        R["shared"] = {
            "serving_seconds": D.get("seconds_to_serving"),
            "model_load_seconds": D.get("model_load_seconds"),
            "raw_read_seconds": round(sum(v.get("seconds", 0) for v in (shared.get("raw_read") or {}).values()), 3),
            "sweep_seconds": S.get("wall_seconds_to_last_succeeded"),
            "baseline_seconds": S.get("baseline_seconds"),
            "phase_seconds": S.get("sum_phase_seconds"),
            "export_seconds": {r["scheme"]: r["metrics"].get("export_seconds") for r in rows},
            "export_bytes_written": {r["scheme"]: r["metrics"].get("export_bytes") for r in rows},
            "blobs_written": {r["scheme"]: r["metrics"].get("blobs_written") for r in rows},
            "warm_export_median_seconds": statistics.median(warm) if warm else None,
            "device_memory": shared.get("device_memory"),
            "states": S.get("states"),
        }
        if warm:
            check("one scheme, shared layout, warm daemon, 3B", round(max(warm), 2), "<= 2 s", max(warm) <= 2.0,
                  "largest warm export of the sweep")
    standalone = load(dirs, "standalone/daemon-sweep.json")
    if standalone:
        rows = job_rows(standalone)
        disk = (limits or {}).get("disk", {}).get("gb_per_s")
        # The strict floor: the fastest way the limits part found to write (one stream, or 4 / 8 threads).
        best = max([disk or 0] + [p.get("gb_per_s", 0) for p in (limits or {}).get("disk_parallel", [])]) or None
        per = {}
        for r in rows:
            m = r["metrics"]
            floor = m.get("export_bytes", 0) / 1e9 / disk if disk else None
            strict = m.get("export_bytes", 0) / 1e9 / best if best else None
            secs = m.get("export_seconds")
            per[r["scheme"]] = {"export_seconds": secs, "write_seconds": m.get("export_write_seconds"),
                                "check_seconds": m.get("export_check_seconds"), "bytes": m.get("export_bytes"),
                                "disk_floor_seconds": round(floor, 3) if floor else None,
                                "ratio_to_floor": round(secs / floor, 3) if floor and secs else None,
                                "parallel_disk_floor_seconds": round(strict, 3) if strict else None,
                                "ratio_to_parallel_floor": round(secs / strict, 3) if strict and secs else None,
                                # Summed over the writer threads: what the writes waited for.
                                "worker_seconds": {k: m.get(f"export_{k}_seconds") for k in ("produce", "hash", "pwrite")},
                                "resident_weights": m.get("export_resident_weights"),
                                "writer_threads": m.get("export_writer_threads")}
        R["standalone"] = {"per_scheme": per,
                           "sweep_seconds": standalone.get("sweep", {}).get("wall_seconds_to_last_succeeded")}
        ratios = [v["ratio_to_floor"] for v in per.values() if v["ratio_to_floor"]]
        if ratios:
            check("one scheme, standalone, vs disk-write floor", max(ratios), "<= 1.3x", max(ratios) <= 1.3,
                  "worst of the schemes; floor = export bytes / measured fsync'd write throughput, one stream")
        strict = [v["ratio_to_parallel_floor"] for v in per.values() if v["ratio_to_parallel_floor"]]
        if strict:
            check("one scheme, standalone, vs the fastest measured write (1, 4 or 8 threads)", max(strict), "<= 1.3x",
                  max(strict) <= 1.3, "worst of the schemes; the stricter floor")
    b7 = load(dirs, "7b-top50.json")
    if b7:
        peak = b7.get("baseline_peak_device_bytes", 0) / 1e9
        R["7b"] = {k: b7.get(k) for k in ("baseline_seconds", "export_seconds", "baseline_peak_device_bytes",
                                          "groups_quantized", "groups_total", "device")}
        check("7B preset peak device memory (calibration + scoring)", round(peak, 2), "<= 30 GB", peak <= 30)
    if shared and limits and limits.get("bf16_gemm_tflops"):
        base_cfg = None
        for d in dirs:
            for p in (d / "config3b.json",):
                if p.exists():
                    base_cfg = json.loads(p.read_text())
        if base_cfg:
            text, vision = linear_params(base_cfg)
            tokens, patches = 128 * 768, 128 * 1024
            flops = 6 * 2 * text * tokens + 2 * 2 * vision * patches
            floor = flops / (limits["bf16_gemm_tflops"] * 1e12)
            ours = R["shared"]["baseline_seconds"]
            R["flop_floor"] = {"linear_params_text": text, "linear_params_vision": vision, "flops": flops,
                               "floor_seconds": round(floor, 2), "ours_seconds": ours,
                               "ratio": round(ours / floor, 2) if ours else None}
            if ours:
                check("calibration + scoring vs FLOP floor", round(ours / floor, 2), "<= 3x", ours / floor <= 3)
    for b in (4, 1):
        mo = load(dirs, f"modelopt-b{b}.json")
        if not mo:
            continue
        flows = mo.get("flows", {})
        M = {"batch_size": (mo.get("settings") or {}).get("batch_size"), "versions": mo.get("versions"),
             "setup_steps": mo.get("setup_steps")}
        for k in ("a", "b"):
            f = flows.get(k)
            if f:
                M[k] = {x: f.get(x) for x in ("fixed_seconds", "mean_per_scheme_seconds", "measured_schemes",
                                              "extrapolated_10_seconds", "extrapolation", "steps", "peak_memory")}
        score = [st["seconds"] for st in (flows.get("b") or {}).get("steps", []) if st.get("step") == "score_auto_quantize"]
        M["score_auto_quantize_seconds"] = score[0] if score else None
        R[f"modelopt_b{b}"] = M
        ours = R.get("shared", {})
        if b == BATCH and ours.get("sweep_seconds"):
            sweep, start = ours["sweep_seconds"], ours.get("serving_seconds") or 0
            for k, goal in (("a", 30), ("b", 5)):
                ext = (M.get(k) or {}).get("extrapolated_10_seconds")
                if ext:
                    ratio = ext / sweep
                    check(f"ten-scheme sweep vs ModelOpt flow ({k}), batch {b}", round(ratio, 1), f">= {goal}x",
                          ratio >= goal, f"ModelOpt {ext:.0f} s ({M[k]['measured_schemes']} schemes measured, "
                          f"extrapolated) / ours {sweep:.1f} s submit to last SUCCEEDED; with our daemon's start "
                          f"({start:.1f} s) {ext / (sweep + start):.1f}x")
            if score and ours.get("baseline_seconds"):
                ratio = score[0] / ours["baseline_seconds"]
                check(f"calibration + scoring vs ModelOpt auto_quantize, batch {b}", round(ratio, 2), ">= 5x",
                      ratio >= 5, f"ModelOpt {score[0]:.1f} s / ours {ours['baseline_seconds']:.1f} s")
    b1 = load(dirs, "b1-top50.json")
    mo1 = R.get("modelopt_b1") or {}
    if b1:
        R["b1"] = {k: b1.get(k) for k in ("baseline_seconds", "export_seconds", "baseline_peak_device_bytes")}
        if mo1.get("score_auto_quantize_seconds") and b1.get("baseline_seconds"):
            ratio = mo1["score_auto_quantize_seconds"] / b1["baseline_seconds"]
            check("calibration + scoring vs ModelOpt auto_quantize, batch 1", round(ratio, 2), ">= 5x", ratio >= 5,
                  f"ModelOpt {mo1['score_auto_quantize_seconds']:.1f} s / ours {b1['baseline_seconds']:.1f} s")
    R["checks"] = checks
    out = dirs[0]
    (out / "perf.json").write_text(json.dumps(R, indent=2) + "\n")
    lines = ["# autoquant performance (bench/perf/perf.sh)", "", f"- GPU: {R.get('gpu')}", f"- {R.get('versions')}"]
    if limits:
        par = ", ".join(f"{p['threads']} threads {p['gb_per_s']} GB/s" for p in limits.get("disk_parallel", []))
        lines.append(f"- limits: disk {limits['disk']['gb_per_s']} GB/s (fsync, {limits['disk']['dir']}; {par}), "
                     f"HBM copy {limits.get('hbm_copy_gb_per_s')} GB/s, bf16 GEMM {limits.get('bf16_gemm_tflops')} TFLOP/s")
    for k in ("shared", "standalone", "7b", "flop_floor"):
        if k in R:
            lines.append(f"- {k}: `{json.dumps(R[k])}`")
    lines += ["", "| target | value | goal | met | note |", "|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['target']} | {c['value']} | {c['goal']} | {'yes' if c['met'] else 'NO'} | {c['note']} |")
    (out / "perf.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
