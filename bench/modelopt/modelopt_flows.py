"""ModelOpt 0.47 producing our FP8 schemes, two ways, timed step by step; same model, calibration
file, steps and batch size as `autoquant quantize` / `autoquantd`. See bench/modelopt/README.md.

  (a) "Option A" (the seed's per-scheme re-run): per scheme, load the model fresh, then
      mtq.auto_quantize(model, quantization_formats=[FP8_DEFAULT_CFG], method="gradient",
          num_calib_steps=N, num_score_steps=N, disabled_layers=["*visual*"] + the scheme's dropped modules,
          constraints={"effective_bits": <every non-dropped group in FP8>})
      then modelopt.torch.export.export_hf_checkpoint(model, export_dir=...).
  (b) "ModelOpt at its fastest": load once, score once with auto_quantize(..., checkpoint=FILE)
      (disabled_layers=["*visual*"]), read the search state back from FILE, then per scheme:
      set the state's best recipe to the scheme's selection, mtq.get_auto_quantize_config(state),
      mtq.quantize(<copy of the unquantized model>, config, forward_loop=<the same N calibration batches>),
      export_hf_checkpoint.

Which groups a scheme quantizes:
  --schemes-dir DIR: our schemes (`autoquant quantize` / `sweep` output), each with
      layer-sensitivity/<scheme>_coverage_from_baseline.json and <scheme>_quant_manifest.json: the groups in
      `selected_layers` become FP8, those in `dropped_layers` stay unquantized.
  otherwise: --schemes topXX,... are coverage points applied with our rule to ModelOpt's own scores: the
      n = floor(X * N + 0.5) least sensitive of the N searchable groups. Flow (a) then first runs the seed's
      all-layers baseline auto_quantize (timed, part of the flow) for its ranking; flow (b) ranks by its scoring.

    python bench/modelopt/modelopt_flows.py --model DIR --calib FILE [--schemes-dir MODELS_ROOT] \
        --schemes top10,top100 --max-schemes 2 --steps 32 --batch-size 4 --device cuda --dtype bfloat16 \
        --flows a,b --work /tmp/mo-work --out modelopt-flows.json [--time-budget 540]
"""
import argparse
import copy
import fnmatch
import gc
import json
import os
import pathlib
import platform
import re
import sys
import time
import traceback
import warnings

T0 = time.time()
REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "python"))

VISUAL = ["*visual*"]  # as in tests/python/modelopt_reference.py and our default (vision not quantized)
ALL_COVERAGES = [f"top{p}" for p in range(10, 101, 10)]
FP8_DTYPE_NAME = "float8_e4m3fn"


def log(msg: str) -> None:
    print(f"[modelopt_flows {time.time() - T0:8.1f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- schemes

def _key_modules_fallback(key: str) -> list:
    """Member modules of a group key (ModelOpt's grouping rules: q_proj -> q,k,v; gate_proj -> gate,up),
    full module names of Qwen2_5_VLForConditionalGeneration. Used only when the quant manifest is missing."""
    base = key[:-len(".quant_recipe")] if key.endswith(".quant_recipe") else key
    full = base if base == "lm_head" or base.startswith("model.") else "model." + base
    head, _, last = full.rpartition(".")
    if last == "q_proj":
        return [f"{head}.{p}" for p in ("q_proj", "k_proj", "v_proj")]
    if last == "gate_proj":
        return [f"{head}.{p}" for p in ("gate_proj", "up_proj")]
    return [full]


def coverage_of(name: str) -> float:
    m = re.fullmatch(r"top(\d{1,3})", name)
    if not m or not 1 <= int(m.group(1)) <= 100:
        raise SystemExit(f"--schemes {name}: without --schemes-dir a scheme is a coverage point topXX, 1 <= XX <= 100")
    return int(m.group(1)) / 100.0


def load_manifest_schemes(schemes_dir, names) -> list:
    """Our schemes: name, coverage, selected/dropped group keys and their member modules (full names)."""
    root = pathlib.Path(schemes_dir)
    if names:
        paths = []
        for n in names:
            p = root / n / "layer-sensitivity" / f"{n}_coverage_from_baseline.json"
            if not p.exists():
                raise SystemExit(f"--schemes {n}: {p} not found")
            paths.append(p)
    else:
        paths = sorted(root.glob("*/layer-sensitivity/*_coverage_from_baseline.json"))
        if not paths:
            raise SystemExit(f"--schemes-dir {root}: no */layer-sensitivity/*_coverage_from_baseline.json")
    schemes = []
    for p in paths:
        name = p.name[:-len("_coverage_from_baseline.json")]
        cov = json.loads(p.read_text())
        qm_path = p.parent / f"{name}_quant_manifest.json"
        groups = json.loads(qm_path.read_text()).get("groups", {}) if qm_path.exists() else {}

        def members(key):
            g = groups.get(key)
            return list(g["modules"]) if g and g.get("modules") else _key_modules_fallback(key)

        selected, dropped = list(cov.get("selected_layers", [])), list(cov.get("dropped_layers", []))
        overlap = set(selected) & set(dropped)
        if overlap:
            raise SystemExit(f"{p}: groups both selected and dropped: {sorted(overlap)}")
        extra = []  # the manifest's own disabled_layers patterns (ours: on inner-model and full names)
        for pat in cov.get("disabled_layers", []) or []:
            extra.append(pat)
            if not pat.startswith("*") and not pat.startswith("model."):
                extra.append("model." + pat)
        schemes.append({
            "name": name, "coverage": cov.get("coverage"), "source": "manifest",
            "coverage_manifest": str(p), "quant_manifest": str(qm_path) if qm_path.exists() else None,
            "selected_groups": selected, "dropped_groups": dropped,
            "selected_modules": sorted({m for k in selected for m in members(k)}),
            "dropped_modules": sorted({m for k in dropped for m in members(k)}),
            "selected_group_members": [members(k) for k in selected],
            "manifest_disabled_patterns": extra,
        })
    if names:
        order = {n: i for i, n in enumerate(names)}
        schemes.sort(key=lambda s: order[s["name"]])
    else:
        schemes.sort(key=lambda s: (s["coverage"] if s["coverage"] is not None else 2.0, s["name"]))
    return schemes


def coverage_schemes(names) -> list:
    return [{"name": n, "coverage": coverage_of(n), "source": "modelopt scores"} for n in names]


def resolve_from_scores(spec: dict, state: dict) -> dict:
    """A coverage point applied to a ModelOpt search state with our rule: the n = floor(X * N + 0.5) least
    sensitive (lowest FP8 score; ties by key) of the N searchable groups become FP8, the others are dropped."""
    import modelopt_reference as mr
    searchable = []
    for k, st in state["candidate_stats"].items():
        names = [str(f) for f in st["formats"]]
        fp8 = [i for i, n in enumerate(names) if n.startswith("FP8")]
        if fp8:
            searchable.append((float(st["scores"][fp8[0]]), mr.strip_key(k), list(st["module_names"])))
    searchable.sort(key=lambda t: (t[0], t[1]))
    n = int(spec["coverage"] * len(searchable) + 0.5)
    sel, drop = searchable[:n], searchable[n:]
    return dict(spec, selected_groups=[t[1] for t in sel], dropped_groups=[t[1] for t in drop],
                selected_modules=sorted({m for t in sel for m in t[2]}),
                dropped_modules=sorted({m for t in drop for m in t[2]}),
                selected_group_members=[t[2] for t in sel], manifest_disabled_patterns=[])


def spread(items: list, k: int) -> list:
    """k of the items spread evenly, first and last included (all of them when k >= len)."""
    if k >= len(items):
        return list(items)
    if k == 1:
        return [items[0]]
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


# --------------------------------------------------------------------------- timing, memory, files

class Bench:
    def __init__(self, device):
        self.cuda = str(device).startswith("cuda")

    def sync(self):
        if self.cuda:
            import torch
            torch.cuda.synchronize()

    def timed(self, steps: list, step: str, fn, scheme=None):
        self.sync()
        t = time.perf_counter()
        out = fn()
        self.sync()
        dt = time.perf_counter() - t
        steps.append({"scheme": scheme, "step": step, "seconds": dt})
        log(f"  {step}{' [' + scheme + ']' if scheme else ''}: {dt:.2f} s")
        return out, dt

    def reset_peak(self):
        if self.cuda:
            import torch
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict:
        import resource
        out = {"process_max_rss_bytes_cumulative": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
        if self.cuda:
            import torch
            torch.cuda.synchronize()
            out["cuda_max_memory_reserved_bytes"] = torch.cuda.max_memory_reserved()
            out["cuda_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
        return out


def release():
    """Collect what the caller dropped (ModelOpt's hooks leave reference cycles) and return cached CUDA memory."""
    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def dir_bytes(d) -> int:
    return sum(p.stat().st_size for p in pathlib.Path(d).rglob("*") if p.is_file())


def norm_name(n: str) -> str:
    """A module name in one spelling whatever the checkpoint layout: 'language_model.layers.0.mlp.up_proj',
    'visual.blocks.0.attn.qkv', 'lm_head'."""
    for old, new in (("model.language_model.", "language_model."), ("model.visual.", "visual."),
                     ("language_model.model.", "language_model."), ("model.layers.", "language_model.layers.")):
        if n.startswith(old):
            return new + n[len(old):]
    return n


def fp8_modules_of_export(export_dir) -> tuple:
    """(modules whose weight is stored as float8_e4m3fn, every tensor name) of an exported checkpoint."""
    from safetensors import safe_open
    fp8, names = set(), []
    for f in sorted(pathlib.Path(export_dir).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                names.append(k)
                if k.endswith(".weight") and str(st.get_slice(k).get_dtype()).lower() in ("f8_e4m3", FP8_DTYPE_NAME):
                    fp8.add(norm_name(k[:-len(".weight")]))
    return fp8, names


def check_export(export_dir, scheme) -> dict:
    fp8, names = fp8_modules_of_export(export_dir)
    want = {norm_name(m) for m in scheme["selected_modules"]}
    return {"fp8_modules": len(fp8), "expected_fp8_modules": len(want), "tensors": len(names),
            "fp8_matches_selection": fp8 == want,
            "fp8_not_selected": sorted(fp8 - want)[:20], "selected_not_fp8": sorted(want - fp8)[:20]}


def compare_exports(dir_a, dir_b) -> dict:
    """Tensor-by-tensor bitwise comparison of two exports of the same scheme."""
    import torch
    from safetensors import safe_open

    def tensors(d):
        out = {}
        for f in sorted(pathlib.Path(d).glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    out[k] = st.get_tensor(k)
        return out

    def raw(t):
        return t.contiguous().view(-1).view(torch.uint8)

    ta, tb = tensors(dir_a), tensors(dir_b)
    common = sorted(set(ta) & set(tb))
    differ = [k for k in common if ta[k].dtype != tb[k].dtype or ta[k].shape != tb[k].shape
              or not torch.equal(raw(ta[k]), raw(tb[k]))]
    return {"tensors_a": len(ta), "tensors_b": len(tb), "common": len(common), "differ": len(differ),
            "differ_names": differ[:20], "only_a": sorted(set(ta) - set(tb))[:20],
            "only_b": sorted(set(tb) - set(ta))[:20], "identical": not differ and set(ta) == set(tb)}


# --------------------------------------------------------------------------- ModelOpt pieces

def quantizable_numel(model) -> dict:
    """{full module name: weight numel} of what ModelOpt can quantize here (Linear and Conv weights);
    its cost denominator is the sum over all of them, disabled ones included."""
    import torch
    return {n: m.weight.numel() for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))}


def all_enabled_fp8_bits(numel: dict, disabled_patterns: list, groups: list) -> float:
    """effective_bits at which ModelOpt's solver must keep every enabled group in FP8: the cost of all of
    them in FP8 (8 bits, numel/2) plus the disabled ones at 16 bits (numel), plus a quarter of the smallest
    enabled group's saving as slack against rounding (turning any group to NONE exceeds the budget)."""
    total = sum(numel.values())
    disabled = {n for n in numel if any(fnmatch.fnmatch(n, p) for p in disabled_patterns)}
    enabled = [n for n in numel if n not in disabled]
    cost = sum(numel[n] for n in disabled) + sum(numel[n] / 2 for n in enabled)
    sizes = [sum(numel.get(m, 0) for m in g) for g in groups]
    slack = 0.25 * min([s / 2 for s in sizes if s] or [1.0])
    return 16.0 * (cost + slack) / total


def fp8_cfg():
    import modelopt.torch.quantization as mtq
    return mtq.FP8_DEFAULT_CFG


def recipe_summary(state) -> dict:
    """{stripped key: 'FP8'|'NONE'} of the solver's recipe in a search state."""
    import modelopt_reference as mr
    out = {}
    for k, r in state["best"]["recipe"].items():
        s = str(r)
        out[mr.strip_key(k)] = "FP8" if s.startswith("FP8") else ("NONE" if s.startswith("NONE") else s)
    return out


# --------------------------------------------------------------------------- flows

class Runner:
    def __init__(self, args, schemes, batches, bench, base_disabled):
        self.args, self.schemes, self.batches, self.bench = args, schemes, batches, bench
        self.base_disabled = base_disabled
        self.work = pathlib.Path(args.work)
        self.skipped, self.errors = [], []
        self.result = None  # set by main; written after every scheme

        def forward_step(m, batch):
            return m(**batch)

        def loss_func(output, batch):
            return output.loss

        self.fwd, self.loss = forward_step, loss_func

    def may_start(self, flow, what, estimate) -> bool:
        b = self.args.time_budget
        if b is None:
            return True
        left = b - (time.time() - T0)
        if left <= 0 or (estimate is not None and estimate > left):
            self.skipped.append({"flow": flow, "what": what, "estimate_seconds": estimate,
                                 "seconds_left": left, "reason": "time budget"})
            log(f"flow {flow}: skipping {what} (estimate {estimate if estimate is None else round(estimate, 1)} s,"
                f" {left:.1f} s of the budget left)")
            return False
        return True

    def flush(self):
        if self.result is not None:
            write_json(self.args.out, self.result)

    def load_model(self):
        import modelopt_reference as mr
        return mr.load_model(self.args.model, self.args.device, self.args.dtype)

    def auto_quantize(self, model, eb, disabled, **extra):
        import modelopt.torch.quantization as mtq
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mtq.auto_quantize(
                model, constraints={"effective_bits": eb}, quantization_formats=[fp8_cfg()],
                data_loader=self.batches, forward_step=self.fwd, loss_func=self.loss,
                num_calib_steps=self.args.steps, num_score_steps=self.args.steps, method="gradient",
                disabled_layers=disabled, verbose=False, **extra)

    def export(self, model, d):
        from modelopt.torch.export import export_hf_checkpoint
        if d.exists():
            import shutil
            shutil.rmtree(d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_hf_checkpoint(model, export_dir=str(d))

    def _record_scheme(self, res, flow, s, entry, steps, n0, totals, fixed):
        entry.update({st["step"] + "_seconds": st["seconds"] for st in steps[n0:]})
        entry["total_seconds"] = sum(st["seconds"] for st in steps[n0:])
        totals.append(entry["total_seconds"])
        res["per_scheme"].append(entry)
        if not entry["export_check"]["fp8_matches_selection"]:
            self.errors.append(f"flow {flow} {s['name']}: exported FP8 modules differ from the selection: "
                               f"{entry['export_check']}")
        res["peak_memory"] = self.bench.peak()
        self._summarise(res, fixed, totals)
        self.flush()

    # ---- (a)
    def flow_a(self) -> dict:
        args, bench = self.args, self.bench
        res = {"name": "Option A: per scheme, fresh model + auto_quantize(disabled_layers=dropped) + export",
               "steps": [], "per_scheme": [], "skipped": []}
        steps = res["steps"]
        self.result["flows"]["a"] = res
        bench.reset_peak()
        fixed, totals = 0.0, []
        schemes = self.schemes
        if schemes[0]["source"] != "manifest":
            # The seed's procedure: an all-layers baseline run gives the sensitivity ranking.
            if not self.may_start("a", "baseline", None):
                res["skipped"] = [s["name"] for s in schemes]
                self._summarise(res, None, totals)
                return res
            log("flow a: all-layers baseline auto_quantize (the ranking)")
            model, _ = bench.timed(steps, "load_model_baseline", self.load_model)
            numel = quantizable_numel(model)
            eb = all_enabled_fp8_bits(numel, self.base_disabled, [[n] for n in numel])
            (model, state), _ = bench.timed(steps, "baseline_auto_quantize",
                                            lambda: self.auto_quantize(model, eb, list(self.base_disabled)))
            schemes = [resolve_from_scores(s, state) for s in schemes]
            res["baseline_ranking_fp8_groups"] = len(schemes[0]["selected_groups"]) + len(schemes[0]["dropped_groups"])
            model = state = None
            release()
            fixed = sum(st["seconds"] for st in steps)
        res["schemes"] = [{"name": s["name"], "selected_groups": s["selected_groups"]} for s in schemes]
        for s in schemes:
            est = sum(totals) / len(totals) if totals else None
            if not self.may_start("a", s["name"], est):
                res["skipped"].append(s["name"])
                continue
            log(f"flow a: scheme {s['name']} ({len(s['selected_groups'])} groups FP8, "
                f"{len(s['dropped_groups'])} dropped)")
            n0 = len(steps)
            model, _ = bench.timed(steps, "load_model", self.load_model, s["name"])
            numel = quantizable_numel(model)
            missing = [m for m in s["selected_modules"] + s["dropped_modules"] if m not in numel]
            if missing:
                raise SystemExit(f"scheme {s['name']}: modules not in the model: {missing[:10]}")
            # Quantizable modules the scheme does not list stay unquantized too, as in ours; recorded.
            known = set(s["selected_modules"]) | set(s["dropped_modules"])
            unlisted = sorted(n for n in numel if n not in known and not any(
                fnmatch.fnmatch(n, p) for p in self.base_disabled + s["manifest_disabled_patterns"]))
            disabled = self.base_disabled + s["dropped_modules"] + unlisted + s["manifest_disabled_patterns"]
            eb = all_enabled_fp8_bits(numel, disabled, s["selected_group_members"])
            (model, state), _ = bench.timed(steps, "auto_quantize", lambda: self.auto_quantize(model, eb, disabled),
                                            s["name"])
            fp8_keys = sorted(k for k, v in recipe_summary(state).items() if v == "FP8")
            solver_ok = set(fp8_keys) == set(s["selected_groups"])
            solver_bits = float(state["best"].get("constraints", {}).get("effective_bits", float("nan")))
            d = self.work / "a" / s["name"]
            bench.timed(steps, "export", lambda: self.export(model, d), s["name"])
            model = state = None
            release()
            if not solver_ok:
                self.errors.append(f"flow a {s['name']}: the solver's FP8 groups differ from the scheme's "
                                   f"selection ({len(fp8_keys)} vs {len(s['selected_groups'])})")
            entry = {"scheme": s["name"], "fp8_groups": len(s["selected_groups"]),
                     "effective_bits_constraint": eb, "solver_effective_bits": solver_bits,
                     "solver_fp8_groups": len(fp8_keys), "solver_matches_selection": solver_ok,
                     "disabled_not_in_scheme": unlisted,
                     "export_dir": str(d), "export_bytes": dir_bytes(d), "export_check": check_export(d, s)}
            self._record_scheme(res, "a", s, entry, steps, n0, totals, fixed)
        res["peak_memory"] = bench.peak()
        self._summarise(res, fixed, totals)
        return res

    # ---- (b)
    def flow_b(self, estimate_score=None) -> dict:
        import modelopt.torch.quantization as mtq
        from modelopt.torch.quantization.algorithms import QuantRecipe
        from modelopt.torch.utils.serialization import safe_load
        import modelopt_reference as mr
        import torch

        args, bench = self.args, self.bench
        res = {"name": "ModelOpt at its fastest: score once (auto_quantize checkpoint=), then per scheme "
                       "get_auto_quantize_config + mtq.quantize on a copy of the unquantized model + export",
               "steps": [], "per_scheme": [], "skipped": []}
        steps = res["steps"]
        self.result["flows"]["b"] = res
        bench.reset_peak()
        if not self.may_start("b", "scoring", estimate_score):
            res["skipped"] = [s["name"] for s in self.schemes]
            res["skipped_scoring"] = True
            self._summarise(res, None, [])
            return res
        log("flow b: load, score once")
        pristine, _ = bench.timed(steps, "load_model", self.load_model)
        numel = quantizable_numel(pristine)
        model, _ = bench.timed(steps, "copy_model_for_scoring", lambda: copy.deepcopy(pristine))
        ckpt = self.work / "b" / "autoquant_search_state.pth"
        if ckpt.exists():
            ckpt.unlink()  # a fresh score; an existing file would be restored instead
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        # The target only decides the scoring run's own recipe, which is not used; every group in FP8.
        eb = all_enabled_fp8_bits(numel, self.base_disabled, [[n] for n in numel])
        bench.timed(steps, "score_auto_quantize", lambda: self.auto_quantize(
            model, eb, list(self.base_disabled), checkpoint=str(ckpt)))
        model = None  # the returned model and state are dropped: the state is read back from the file
        release()
        res["search_checkpoint"] = {"path": str(ckpt), "bytes": ckpt.stat().st_size}
        state, _ = bench.timed(steps, "load_search_state", lambda: safe_load(str(ckpt), weights_only=False))
        fp8_recipe = QuantRecipe(quant_cfg=fp8_cfg(), name="FP8_DEFAULT_CFG")
        none_recipe = QuantRecipe(quant_cfg=None)
        schemes = [s if s["source"] == "manifest" else resolve_from_scores(s, state) for s in self.schemes]
        res["schemes"] = [{"name": s["name"], "selected_groups": s["selected_groups"]} for s in schemes]
        fixed, totals = sum(st["seconds"] for st in steps), []
        self._summarise(res, fixed, totals)
        self.flush()
        calib = self.batches[:args.steps]

        def forward_loop(m):
            with torch.no_grad():
                for b in calib:
                    m(**b)

        for s in schemes:
            est = sum(totals) / len(totals) if totals else None
            if not self.may_start("b", s["name"], est):
                res["skipped"].append(s["name"])
                continue
            log(f"flow b: scheme {s['name']}")
            n0 = len(steps)
            selected, dropped = set(s["selected_groups"]), set(s["dropped_groups"])
            unknown = selected - {mr.strip_key(k) for k in state["candidate_stats"]}
            if unknown:
                raise SystemExit(f"scheme {s['name']}: groups not in ModelOpt's search state: {sorted(unknown)[:10]}")
            # Searchable groups the scheme does not list get NONE, as in ours; recorded.
            unlisted = sorted(mr.strip_key(k) for k, st in state["candidate_stats"].items()
                              if len(st["formats"]) > 1 and mr.strip_key(k) not in selected | dropped)

            def get_config():
                recipe = {}
                for k, st in state["candidate_stats"].items():
                    want = fp8_recipe if mr.strip_key(k) in selected else none_recipe
                    recipe[k] = want if want in st["formats"] else none_recipe  # disabled groups: NONE only
                st2 = dict(state)
                st2["best"] = dict(state["best"], recipe=recipe)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return mtq.get_auto_quantize_config(st2)

            cfg, _ = bench.timed(steps, "get_auto_quantize_config", get_config, s["name"])
            model, _ = bench.timed(steps, "copy_model", lambda: copy.deepcopy(pristine), s["name"])

            def quantize():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return mtq.quantize(model, cfg, forward_loop=forward_loop)

            model, _ = bench.timed(steps, "quantize_calibrate", quantize, s["name"])
            d = self.work / "b" / s["name"]
            bench.timed(steps, "export", lambda: self.export(model, d), s["name"])
            model = None
            release()
            entry = {"scheme": s["name"], "fp8_groups": len(selected), "none_not_in_scheme": unlisted,
                     "quant_cfg_entries": len(cfg["quant_cfg"]),
                     "export_dir": str(d), "export_bytes": dir_bytes(d), "export_check": check_export(d, s)}
            self._record_scheme(res, "b", s, entry, steps, n0, totals, fixed)
        pristine = None
        release()
        res["peak_memory"] = bench.peak()
        self._summarise(res, fixed, totals)
        return res

    @staticmethod
    def _summarise(res, fixed, per_scheme):
        res["measured_schemes"] = len(per_scheme)
        res["fixed_seconds"] = fixed
        res["per_scheme_seconds"] = list(per_scheme)
        res["measured_seconds"] = (fixed + sum(per_scheme)) if fixed is not None else None
        res["mean_per_scheme_seconds"] = sum(per_scheme) / len(per_scheme) if per_scheme else None
        if per_scheme and fixed is not None:
            res["extrapolated_10_seconds"] = fixed + 10 * res["mean_per_scheme_seconds"]
            res["extrapolation"] = (f"fixed_seconds + 10 x the mean of the {len(per_scheme)} measured schemes' "
                                    f"seconds; the other {10 - len(per_scheme)} were not run")
        else:
            res["extrapolated_10_seconds"] = None


def write_json(path, obj):
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    tmp.replace(p)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="base Qwen2.5-VL checkpoint directory (HF layout)")
    ap.add_argument("--calib", required=True, help="calibration file (autoquant.calib.v1 .safetensors)")
    ap.add_argument("--schemes-dir",
                    help="our schemes: DIR/<scheme>/layer-sensitivity/<scheme>_coverage_from_baseline.json "
                         "(+ _quant_manifest.json), e.g. a models root after `autoquant sweep`; without it the "
                         "schemes are coverage points applied to ModelOpt's own scores")
    ap.add_argument("--schemes", help="comma-separated scheme names (with --schemes-dir: default all of them, by "
                                      "coverage) or coverage points topXX (default top10,top20,...,top100)")
    ap.add_argument("--max-schemes", type=int, default=10,
                    help="run K of the schemes, spread evenly over the list (first and last included)")
    ap.add_argument("--steps", type=int, required=True, help="num_calib_steps = num_score_steps (batches)")
    ap.add_argument("--batch-size", type=int, default=1, help="samples per batch (file order, concatenated)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--flows", default="a,b", help="a, b or a,b")
    ap.add_argument("--work", required=True, help="exports go to WORK/a/<scheme>, WORK/b/<scheme>")
    ap.add_argument("--out", required=True, help="the result JSON (rewritten after every scheme)")
    ap.add_argument("--time-budget", type=float,
                    help="seconds from the start: a scheme (or a baseline/scoring run) is not started when the "
                         "estimate from earlier steps would pass it; skipped ones are recorded")
    ap.add_argument("--progress", action="store_true", help="keep ModelOpt's tqdm progress bars")
    args = ap.parse_args(argv)
    if not args.progress:
        os.environ.setdefault("TQDM_DISABLE", "1")
    flows = [f.strip() for f in args.flows.split(",") if f.strip()]
    if not flows or any(f not in ("a", "b") for f in flows):
        ap.error("--flows takes a, b or a,b")
    if args.steps < 1 or args.batch_size < 1 or args.max_schemes < 1:
        ap.error("--steps, --batch-size and --max-schemes must be >= 1")
    names = [n.strip() for n in args.schemes.split(",") if n.strip()] if args.schemes else None
    if args.schemes_dir:
        all_schemes = load_manifest_schemes(args.schemes_dir, names)
    else:
        all_schemes = coverage_schemes(names or ALL_COVERAGES)
    schemes = spread(all_schemes, args.max_schemes)

    log(f"importing torch, transformers, modelopt (device {args.device}, dtype {args.dtype})")
    setup = []
    t = time.perf_counter()
    import torch
    import transformers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import modelopt
        import modelopt.torch.quantization  # noqa: F401
        import modelopt.torch.export  # noqa: F401
    import modelopt_reference as mr
    setup.append({"scheme": None, "step": "import", "seconds": time.perf_counter() - t})
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is false")
    bench = Bench(args.device)

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "modelopt": modelopt.__version__,
                "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                "cuda": torch.version.cuda if args.device == "cuda" else None,
                "cpu_threads": torch.get_num_threads()}
    try:
        import pulp
        versions["pulp"] = pulp.__version__
    except Exception:  # noqa: BLE001
        pass
    if args.device == "cuda":
        # The first FP8 fake quant on CUDA JIT-builds (or loads from ~/.cache/torch_extensions) ModelOpt's
        # kernel: a one-off per machine, timed here apart from the flows.
        def warm():
            from modelopt.torch.quantization.extensions import get_cuda_ext_fp8
            from modelopt.torch.quantization.tensor_quant import scaled_e4m3
            ext = get_cuda_ext_fp8()
            x = torch.randn(64, 64, device="cuda", dtype=getattr(torch, args.dtype))
            scaled_e4m3(x, x.abs().amax(), None, 4, 3)
            return ext is not None
        ok, _ = bench.timed(setup, "cuda_fp8_extension_warmup", warm)
        versions["modelopt_cuda_ext_fp8"] = bool(ok)

    log(f"reading the calibration set {args.calib}")
    samples, _ = bench.timed(setup, "load_calib", lambda: mr.load_calib(args.calib))
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(args.model)
    tied = bool(getattr(config, "tie_word_embeddings", False)
                or getattr(getattr(config, "text_config", None), "tie_word_embeddings", False))
    # What ours never quantizes: the vision tower, and lm_head when it is the (tied) embedding.
    base_disabled = VISUAL + (["lm_head"] if tied else [])
    batches, _ = bench.timed(setup, "make_batches", lambda: mr.make_batches(
        samples, args.steps, config.image_token_id, args.device, getattr(torch, args.dtype), args.batch_size))
    seq_len = int(batches[0]["input_ids"].shape[1])

    result = {
        "tool": "bench/modelopt/modelopt_flows.py",
        "complete": False,
        "exit_code": None,
        "command": [sys.executable, *sys.argv],
        "versions": versions,
        "settings": {
            "model": str(args.model), "tied_embeddings": tied, "calib": str(args.calib),
            "calib_samples_in_file": len(samples), "steps": args.steps, "batch_size": args.batch_size,
            "samples_used": args.steps * args.batch_size, "seq_len": seq_len, "device": args.device,
            "dtype": args.dtype, "flows": flows, "max_schemes": args.max_schemes,
            "time_budget_seconds": args.time_budget, "work": str(args.work),
            "selection": ("our schemes' coverage manifests (--schemes-dir " + str(args.schemes_dir) + ")"
                          if args.schemes_dir else
                          "coverage points on ModelOpt's own FP8 scores: n = floor(X * N + 0.5) least sensitive "
                          "of the N searchable groups; flow a ranks by its all-layers baseline run, flow b by "
                          "its scoring run"),
            "method": "gradient", "formats": ["FP8_DEFAULT_CFG"], "base_disabled_layers": base_disabled,
            "num_calib_steps": args.steps, "num_score_steps": args.steps,
            "loss": "HF output.loss (token-mean next-token CE, labels = input_ids, padding -> -100)",
            "called_on": "Qwen2_5_VLForConditionalGeneration (lm_head searched unless tied)",
            "flow_a_constraint": "effective_bits at which every non-dropped group must be FP8 (+ a quarter of "
                                 "the smallest group's saving as slack)",
            "flow_b_model_copies": "one unquantized model kept on the device; copy.deepcopy of it for the "
                                   "scoring run and for every scheme",
        },
        "schemes_available": [s["name"] for s in all_schemes],
        "schemes": [{k: (len(v) if k.endswith("_modules") or k == "selected_group_members" else v)
                     for k, v in s.items()} for s in schemes],
        "setup_steps": setup,
        "flows": {},
        "skipped": [],
        "errors": [],
    }
    runner = Runner(args, schemes, batches, bench, base_disabled)
    runner.result = result
    result["skipped"], result["errors"] = runner.skipped, runner.errors
    write_json(args.out, result)
    rc = 0
    try:
        if "a" in flows:
            log(f"flow a: {len(schemes)} scheme(s): {', '.join(s['name'] for s in schemes)}")
            runner.flow_a()
            write_json(args.out, result)
        if "b" in flows:
            est = None
            a = result["flows"].get("a")
            if a:  # flow b's scoring is one auto_quantize run on all groups plus a model load
                base = [st["seconds"] for st in a["steps"] if st["step"] in ("load_model_baseline",
                                                                             "baseline_auto_quantize")]
                if len(base) == 2:
                    est = sum(base)
                elif a["per_scheme"]:
                    est = max(e["auto_quantize_seconds"] + e["load_model_seconds"] for e in a["per_scheme"])
            runner.flow_b(est)
            write_json(args.out, result)
        if "a" in result["flows"] and "b" in result["flows"]:
            cross = {}
            sel_b = {x["name"]: x["selected_groups"] for x in result["flows"]["b"].get("schemes", [])}
            for ea in result["flows"]["a"]["per_scheme"]:
                eb_ = next((e for e in result["flows"]["b"]["per_scheme"] if e["scheme"] == ea["scheme"]), None)
                if eb_:
                    sel_a = next(x["selected_groups"] for x in result["flows"]["a"]["schemes"]
                                 if x["name"] == ea["scheme"])
                    cross[ea["scheme"]] = dict(compare_exports(ea["export_dir"], eb_["export_dir"]),
                                               same_selection=sorted(sel_a) == sorted(sel_b[ea["scheme"]]))
            result["a_vs_b_exports"] = cross
            for k, v in cross.items():
                log(f"a vs b [{k}]: {v['common']} common tensors, {v['differ']} differ"
                    f"{' (identical)' if v['identical'] else ''}"
                    f"{'' if v['same_selection'] else ' (the two flows selected different groups)'}")
    except BaseException as e:  # noqa: BLE001 - recorded, then turned into the exit code
        result["errors"].append(f"{type(e).__name__}: {e}")
        result["traceback"] = traceback.format_exc()
        log(f"FAILED: {type(e).__name__}: {e}")
        rc = 1
    if runner.errors:
        rc = 1
    result["complete"] = rc == 0
    result["exit_code"] = rc
    result["total_seconds"] = time.time() - T0
    write_json(args.out, result)
    for f, r in result["flows"].items():
        log(f"flow {f}: measured {r.get('measured_schemes')} scheme(s) in "
            f"{(r.get('measured_seconds') or 0):.1f} s; extrapolated to 10: {r.get('extrapolated_10_seconds')}")
    log(f"wrote {args.out} (exit {rc})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
