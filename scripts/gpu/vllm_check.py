"""One checkpoint in vLLM itself (issue 24), on the GPU machine: run by scripts/gpu/verify_vllm.sh,
one process per checkpoint (a fresh engine each time), with vLLM staged by bench/vllm/stage.sh.

    python3 vllm_check.py --model DIR --eval-text EVAL_TXT --eval-image EVAL_IMG --prompts PROMPTS.json \
        --out RESULT.json [--topk 20] [--gen-tokens 16]

Writes RESULT.json:
  loaded / error           whether LLM(model=DIR) came up, else vLLM's own message (and the traceback's tail)
  linears                  every Linear vLLM built: {vllm name: {"class", "method", "scheme"}}
  generations              greedy tokens for the text and image prompts, and whether every logprob was finite
  prompt_logprobs          per evaluation sample: the prompt ids vLLM used, and per position the logprob of the
                           actual token and the top-k (ids, logprobs); position 0 has none
The comparison with autoquant's own logits is bench/vllm/compare.py's job.
"""
import argparse
import json
import math
import os
import sys
import time
import traceback


def linear_methods(model):
    from vllm.model_executor.layers.linear import LinearBase
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (LinearBase, ParallelLMHead)):
            qm = getattr(m, "quant_method", None)
            out[name] = {"class": type(m).__name__, "method": type(qm).__name__ if qm is not None else None,
                         "scheme": type(m.scheme).__name__ if getattr(m, "scheme", None) is not None else None}
    return out


def per_position(prompt_logprobs, ids, k):
    """[(actual logprob, [top ids], [top logprobs])] for positions 1.. (position 0 has no prediction)."""
    rows = []
    for pos in range(1, len(ids)):
        d = prompt_logprobs[pos]
        actual = d[ids[pos]].logprob
        # The actual token is in the dict whatever its rank: keep only the top k.
        top = sorted((lp.rank, tok, lp.logprob) for tok, lp in d.items() if lp.rank is not None and lp.rank <= k)
        rows.append([actual, [t for _, t, _ in top], [lp for _, _, lp in top]])
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--eval-text", required=True, help="calibration-format file of text-only samples (input ids)")
    ap.add_argument("--eval-image", required=True, help="calibration-format file of image samples + images.json")
    ap.add_argument("--prompts", required=True, help="JSON: {text: [...], image: [[text, image path], ...]}")
    ap.add_argument("--out", required=True)
    ap.add_argument("--topk", type=int, default=20)
    ap.add_argument("--gen-tokens", type=int, default=16)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    a = ap.parse_args()
    result = {"model": a.model, "loaded": False}
    t0 = time.time()
    try:
        from PIL import Image
        from safetensors.torch import load_file
        from vllm import LLM, SamplingParams
        result["vllm_version"] = __import__("vllm").__version__
        llm = LLM(model=a.model, enforce_eager=True, compilation_config=0, max_model_len=4096, seed=0,
                  gpu_memory_utilization=a.gpu_memory_utilization, max_logprobs=a.topk,
                  limit_mm_per_prompt={"image": 1, "video": 0})
    except Exception as e:  # noqa: BLE001 - vLLM's own message is the result
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()[-4000:]
        json.dump(result, open(a.out, "w"), indent=1)
        print(f"{a.model}: vLLM did not load it: {result['error']}")
        return 0
    result["loaded"] = True
    result["load_seconds"] = round(time.time() - t0, 1)
    result["linears"] = llm.apply_model(linear_methods)[0]

    prompts = json.load(open(a.prompts))
    greedy = SamplingParams(temperature=0.0, max_tokens=a.gen_tokens, logprobs=1, ignore_eos=True)
    gen_in = [{"prompt": p} for p in prompts["text"]]
    gen_in += [{"prompt": p, "multi_modal_data": {"image": Image.open(img).convert("RGB")}} for p, img in
               prompts["image"]]
    gens = []
    for inp, out in zip(gen_in, llm.generate(gen_in, greedy, use_tqdm=False)):
        c = out.outputs[0]
        lps = [lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)]
        gens.append({"kind": "image" if "multi_modal_data" in inp else "text", "tokens": list(c.token_ids),
                     "finite": all(math.isfinite(x) for x in lps)})
    result["generations"] = gens

    scoring = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=a.topk)
    samples = []
    text = load_file(a.eval_text)
    for ids, mask in zip(text["input_ids"].tolist(), text["attention_mask"].tolist()):
        samples.append(("text", {"prompt_token_ids": [t for t, m in zip(ids, mask) if m]}))
    img = load_file(a.eval_image)
    for (p, path), ids, mask in zip(prompts["eval_image"], img["input_ids"].tolist(), img["attention_mask"].tolist()):
        samples.append(("image", {"prompt": p, "multi_modal_data": {"image": Image.open(path).convert("RGB")},
                                  "expected_ids": [t for t, m in zip(ids, mask) if m]}))
    outs = llm.generate([{k: v for k, v in s.items() if k != "expected_ids"} for _, s in samples], scoring,
                        use_tqdm=False)
    result["prompt_logprobs"] = []
    for (kind, s), out in zip(samples, outs):
        ids = list(out.prompt_token_ids)
        row = {"kind": kind, "ids": ids, "positions": per_position(out.prompt_logprobs, ids, a.topk)}
        if "expected_ids" in s:
            row["ids_equal_ours"] = ids == s["expected_ids"]
        result["prompt_logprobs"].append(row)
    result["seconds"] = round(time.time() - t0, 1)
    json.dump(result, open(a.out, "w"))
    print(f"{a.model}: loaded in {result['load_seconds']} s, {len(result['linears'])} Linears, "
          f"{len(gens)} generations, {len(samples)} scored samples, {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
