"""Evaluate autoquant schemes the way they will be served: in vLLM.

For the base model and each scheme directory: perplexity on an evaluation set (vLLM's prompt
log-probabilities) and greedy agreement with the base (the share of generated tokens equal to the
base's, position by position). Each checkpoint runs in a process of its own, so every engine starts
from a clean GPU.

    python examples/vllm_eval.py --base /models/base --eval eval.safetensors /models/top10 /models/top50
    python examples/vllm_eval.py --base /models/base --texts passages.txt /models/top*

--eval takes an autoquant calibration-format file (`autoquant calib synth`, `autoquant-calib`); its
text-only samples are scored (samples with images are skipped: give their images to vLLM yourself).
--texts takes a UTF-8 file of passages, one per line, tokenized by each checkpoint's tokenizer.
Needs vLLM (0.26 on torch 2.11; see docs/deployment.md) and a GPU.
"""
import argparse
import math
import multiprocessing as mp


def evaluate(model, prompts, gen_prompts, gen_tokens, gpu_memory_utilization, queue):
    from vllm import LLM, SamplingParams
    llm = LLM(model=model, enforce_eager=True, gpu_memory_utilization=gpu_memory_utilization, seed=0,
              limit_mm_per_prompt={"image": 0, "video": 0})
    scored = llm.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    total, count = 0.0, 0
    for out in scored:
        ids = out.prompt_token_ids
        for pos in range(1, len(ids)):
            total += out.prompt_logprobs[pos][ids[pos]].logprob
            count += 1
    greedy = llm.generate(gen_prompts, SamplingParams(temperature=0.0, max_tokens=gen_tokens, ignore_eos=True),
                          use_tqdm=False)
    queue.put({"ppl": math.exp(-total / count), "tokens": [list(o.outputs[0].token_ids) for o in greedy],
               "positions": count})


def run(model, prompts, gen_prompts, args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=evaluate, args=(model, prompts, gen_prompts, args.gen_tokens,
                                           args.gpu_memory_utilization, queue))
    p.start()
    result = queue.get()
    p.join()
    return result


def load_prompts(args):
    if args.eval:
        from safetensors.torch import load_file
        ev = load_file(args.eval)
        images = ev.get("sample_image_offsets")
        prompts = []
        for i, (ids, mask) in enumerate(zip(ev["input_ids"].tolist(), ev["attention_mask"].tolist())):
            if images is not None and int(images[i + 1] - images[i]) > 0:
                continue
            prompts.append({"prompt_token_ids": [t for t, m in zip(ids, mask) if m]})
        if not prompts:
            raise SystemExit(f"{args.eval} has no text-only samples")
        return prompts, prompts[: args.gen_prompts]
    lines = [line.strip() for line in open(args.texts, encoding="utf-8") if line.strip()]
    if not lines:
        raise SystemExit(f"{args.texts} holds no passages")
    return [{"prompt": t} for t in lines], [{"prompt": t} for t in lines[: args.gen_prompts]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("schemes", nargs="+", help="scheme directories (autoquant outputs)")
    ap.add_argument("--base", required=True, help="the base model directory the schemes were made from")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--eval", help="calibration-format evaluation set (.safetensors)")
    src.add_argument("--texts", help="text file, one passage per line")
    ap.add_argument("--gen-prompts", type=int, default=4, help="prompts for greedy agreement (default 4)")
    ap.add_argument("--gen-tokens", type=int, default=32, help="tokens generated per prompt (default 32)")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    args = ap.parse_args()
    prompts, gen_prompts = load_prompts(args)
    base = run(args.base, prompts, gen_prompts, args)
    print(f"{'checkpoint':40s} {'perplexity':>12s} {'greedy = base':>14s}")
    print(f"{args.base:40s} {base['ppl']:12.4f} {'-':>14s}")
    for scheme in args.schemes:
        r = run(scheme, prompts, gen_prompts, args)
        same = sum(a == b for x, y in zip(r["tokens"], base["tokens"]) for a, b in zip(x, y))
        total = sum(len(y) for y in base["tokens"])
        print(f"{scheme:40s} {r['ppl']:12.4f} {100.0 * same / total:13.1f}%")


if __name__ == "__main__":
    main()
