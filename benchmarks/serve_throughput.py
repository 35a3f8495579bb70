"""Serving and judging on CPU: `tandem serve` requests/s for short completions, and a tiny judge's agreement with gold.

    python benchmarks/serve_throughput.py --out benchmarks/out/serve            # ~10 min on 2 idle cores

1. Throughput: a live `tandem serve` (one generation at a time, the default) answers `--requests` short
   completions (`--max-tokens` tokens, greedy) from `--concurrency` client threads using the official
   `openai` client; reported as requests/s, generated tokens/s and latency percentiles.
2. Judging: held-out sentiment preference pairs (`get_task("sentiment").preference_pairs(held_out=True)`)
   are judged by (a) the untrained base model (the chance baseline) and (b) the same model after
   `run_sft` on compare questions built from training pairs ("Verdict: A/B", order randomised), each
   single-order (pair order randomised, so a position bias cannot pass for skill) and both-orders
   averaged, locally (`LocalJudge`) and through the server (`OpenAIJudge`). Agreement = share of pairs
   where the judge prefers the gold-chosen response. Writes results.json and serve_throughput.png.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
from pathlib import Path

import torch

COMPACT_SCORE_TEMPLATE = """\
kind: score
instruction: |-
  How positive is this continuation of the review?
  {prompt}
  Continuation: {response}
answer_instruction: Answer "{verdict_prefix} <digit>", {low} (negative) to {high} (positive).
scale: [0, 9]
"""
COMPACT_TEMPLATE = """\
kind: compare
instruction: |-
  Which continuation of the review is more positive?
  {prompt}
  {label_a}: {response_a}
  {label_b}: {response_b}
answer_instruction: Answer "{verdict_prefix} {label_a}" or "{verdict_prefix} {label_b}".
labels: [A, B]
"""


def build_base_model(out: Path, seed: int) -> Path:
    from tandem.models.factory import MODEL_SIZES, build_model
    from tandem.models.tokenizer import train_tokenizer
    from tandem.tasks import get_task

    folder = out / "base-model"
    if (folder / "config.json").exists():
        return folder
    texts = get_task("sentiment").pretrain_corpus(2000, seed=seed) + [COMPACT_TEMPLATE, COMPACT_SCORE_TEMPLATE] * 50
    tokenizer = train_tokenizer(texts, vocab_size=MODEL_SIZES["tiny"].vocab_size)
    model = build_model(MODEL_SIZES["tiny"], tokenizer, arch="llama", seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def measure_throughput(model_dir: Path, requests: int, max_tokens: int, concurrency: list[int]) -> list[dict]:
    import openai

    from tandem.serve import BackgroundServer, ServeConfig, create_app

    results = []
    config = ServeConfig(model=model_dir, model_name="bench", max_queue=max(concurrency) * 2)
    with BackgroundServer(create_app(config)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)
        client.completions.create(model="bench", prompt="Review: warm-up", max_tokens=2)
        for threads in concurrency:
            latencies, tokens, lock = [], [], threading.Lock()
            prompts = [f"Review: I watched the film number {i} and" for i in range(requests)]

            def worker(mine: list[str]) -> None:
                for prompt in mine:
                    started = time.perf_counter()
                    reply = client.completions.create(model="bench", prompt=prompt, max_tokens=max_tokens, temperature=0)
                    with lock:
                        latencies.append(time.perf_counter() - started)
                        tokens.append(reply.usage.completion_tokens)

            started = time.perf_counter()
            pool = [threading.Thread(target=worker, args=(prompts[i::threads],)) for i in range(threads)]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            seconds = time.perf_counter() - started
            latencies.sort()
            results.append({
                "client_threads": threads, "requests": requests, "max_tokens": max_tokens, "seconds": round(seconds, 3),
                "requests_per_s": round(requests / seconds, 2), "tokens_per_s": round(sum(tokens) / seconds, 1),
                "latency_p50_s": round(statistics.median(latencies), 4),
                "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 4),
            })
            print(results[-1], flush=True)
    return results


def judge_training_data(kind: str, template_path: Path, tokenizer, n: int, seed: int, path: Path) -> None:
    """SFT records: prompt = the question rendered with the chat template, completion = "Verdict: <label>".

    compare: the gold-chosen response shown first or second at random, label A or B;
    score: each response of a training pair alone, label = the digit nearest 9 * (gold + 1) / 2.
    """
    from tandem.judges import load_template
    from tandem.tasks import get_task

    task, template, rng = get_task("sentiment"), load_template(template_path), random.Random(seed)
    questions = []
    for pair in task.preference_pairs(n, seed=seed):
        if kind == "compare":
            chosen_first = rng.random() < 0.5
            first, second = (pair["chosen"], pair["rejected"]) if chosen_first else (pair["rejected"], pair["chosen"])
            fields = {"prompt": pair["prompt"], "response_a": first, "response_b": second}
            questions.append((fields, template.labels[0] if chosen_first else template.labels[1]))
        else:
            for response in (pair["chosen"], pair["rejected"]):
                [gold] = task.gold_reward([pair["prompt"]], [response])
                questions.append(({"prompt": pair["prompt"], "response": response}, str(round(9 * (gold + 1) / 2))))
    with open(path, "w", encoding="utf-8") as file:
        for fields, answer in questions:
            prompt = tokenizer.apply_chat_template(template.messages(fields), tokenize=False, add_generation_prompt=True)
            file.write(json.dumps({"prompt": prompt, "completion": f"{template.verdict_prefix} {answer}"}) + "\n")


def agreement(judge, pairs: list[dict], seed: int, pointwise: bool = False) -> dict:
    """Share of pairs where the judge prefers the gold-chosen response (ties count half), and questions/s.

    pointwise: each response is scored alone and the pair decided by the scores (p = (1 + s_c - s_r) / 2).
    Otherwise pairs are compared, in both orders when the judge does, else in one order randomised per
    pair (so a judge that always answers "A" scores 50%).
    """
    from tandem.judges import compare_from_scores

    rng = random.Random(seed)
    prompts, chosen, rejected = [p["prompt"] for p in pairs], [p["chosen"] for p in pairs], [p["rejected"] for p in pairs]
    started = time.perf_counter()
    if pointwise:
        verdicts = judge.score(prompts + prompts, chosen + rejected)
        questions = 2 * len(pairs)
        p_chosen = [None if c.value is None or r.value is None else compare_from_scores(c.value, r.value)
                    for c, r in zip(verdicts[: len(pairs)], verdicts[len(pairs) :])]
    elif judge.both_orders:
        questions = 2 * len(pairs)
        p_chosen = [v.value for v in judge.compare(prompts, chosen, rejected)]
    else:
        flips = [rng.random() < 0.5 for _ in pairs]
        firsts = [r if f else c for c, r, f in zip(chosen, rejected, flips)]
        seconds_ = [c if f else r for c, r, f in zip(chosen, rejected, flips)]
        questions = len(pairs)
        verdicts = judge.compare(prompts, firsts, seconds_)
        p_chosen = [None if v.value is None else (1 - v.value if f else v.value) for v, f in zip(verdicts, flips)]
    seconds = time.perf_counter() - started
    usable = [p for p in p_chosen if p is not None]
    score = [1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in usable]
    return {"agreement": round(sum(score) / len(score), 4) if score else None, "usable": len(usable), "pairs": len(pairs),
            "mean_p_chosen": round(sum(usable) / len(usable), 4) if usable else None,
            "order_disagreements": judge.stats.order_disagreements, "unusable": dict(judge.stats.unusable),
            "questions_per_s": round(questions / seconds, 2)}


def measure_judges(kind: str, base_dir: Path, out: Path, n_train: int, steps: int, n_pairs: int, seed: int) -> dict:
    """Train a `kind` ("score" or "compare") judge with `run_sft`; agreement with gold of it and of the untrained base."""
    from tandem.judges import LocalJudge, OpenAIJudge
    from tandem.models.loading import load_tokenizer
    from tandem.serve import BackgroundServer, ServeConfig, create_app
    from tandem.tasks import get_task
    from tandem.trainers.sft import SFTConfig, run_sft

    template = out / f"compact_{kind}.yaml"
    template.write_text(COMPACT_SCORE_TEMPLATE if kind == "score" else COMPACT_TEMPLATE)
    data = out / f"judge_{kind}_sft.jsonl"
    judge_training_data(kind, template, load_tokenizer(base_dir), n_train, seed, data)
    started = time.perf_counter()
    sft = run_sft(SFTConfig(model=base_dir, data=data, out=out / f"judge-{kind}-sft", max_steps=steps, batch_size=32,
                            micro_batch_size=32, lr=2e-3, max_length=384, seed=seed, eval_fraction=0.02))
    train_seconds = time.perf_counter() - started
    pairs = get_task("sentiment").preference_pairs(n_pairs, seed=seed + 1, held_out=True)
    results = {"kind": kind, "train_steps": steps, "train_pairs": n_train, "train_seconds": round(train_seconds, 1),
               "judges": []}
    templates = {f"{kind}_template": str(template)}
    pointwise = kind == "score"
    for name, model_dir in (("untrained", base_dir), (f"sft_{kind}_judge", Path(sft.model_dir))):
        for both in ((False,) if pointwise else (False, True)):
            judge = LocalJudge(model_dir, both_orders=both, batch_size=32, **templates)
            row = {"model": name, "backend": "local", "both_orders": both, **agreement(judge, pairs, seed, pointwise)}
            results["judges"].append(row)
            print(row, flush=True)
    with BackgroundServer(create_app(ServeConfig(model=Path(sft.model_dir), model_name="judge"))) as server:
        judge = OpenAIJudge(server.url + "/v1", "judge", max_concurrency=4, timeout=300, **templates)
        row = {"model": f"sft_{kind}_judge", "backend": "http", "both_orders": not pointwise,
               **agreement(judge, pairs, seed, pointwise)}
        results["judges"].append(row)
        print(row, flush=True)
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if results.get("judging") else 1
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    rows = results["throughput"]
    axes[0][0].bar([str(r["client_threads"]) for r in rows], [r["requests_per_s"] for r in rows], color="tab:blue")
    axes[0][0].set(xlabel="client threads", ylabel="requests / s",
                   title=f"tandem serve, {rows[0]['max_tokens']}-token completions")
    if panels == 2:
        judges = [row for part in results["judging"] for row in part["judges"]]
        labels = [f"{j['model']}\n{j['backend']}" + (", both orders" if j["both_orders"] else "") for j in judges]
        axes[0][1].bar(range(len(judges)), [j["agreement"] or 0 for j in judges], color="tab:green")
        axes[0][1].axhline(0.5, color="grey", linestyle="--", linewidth=1)
        axes[0][1].set_xticks(range(len(judges)), labels, fontsize=7)
        axes[0][1].set(ylim=(0, 1), ylabel="agreement with gold", title="judge vs sentiment gold (held out)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/serve"))
    parser.add_argument("--model", type=Path, default=None, help="Model to serve (default: a fresh 'tiny' preset model).")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--judge-kind", choices=["score", "compare"], nargs="+", default=["score"],
                        help="Judges to train: pointwise score (pairs decided by scores) and/or pairwise compare.")
    parser.add_argument("--judge-train-pairs", type=int, default=3000)
    parser.add_argument("--judge-steps", type=int, default=300, help="SFT steps of the judge (0: skip the judging part).")
    parser.add_argument("--judge-pairs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.model or build_base_model(args.out, args.seed)
    results = {"model": str(base), "torch_threads": args.threads,
               "throughput": measure_throughput(base, args.requests, args.max_tokens, args.concurrency)}
    if args.judge_steps > 0:
        results["judging"] = [measure_judges(kind, base, args.out, args.judge_train_pairs, args.judge_steps, args.judge_pairs,
                                             args.seed) for kind in args.judge_kind]
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "serve_throughput.png")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'serve_throughput.png'}")


if __name__ == "__main__":
    main()
