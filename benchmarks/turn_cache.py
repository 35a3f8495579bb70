"""Multi-turn rollouts with the whole conversation as the prompt (`--history full`): the KV cache kept across turns
against a fresh prefill of the conversation at every turn, side by side in one process. With `--history none` (each
turn sees the instructions and the current observation): the instructions' KV cache kept across turns
(`tandem.generation.prefix.KeptPrefix`) against computing them at every turn.

    python benchmarks/turn_cache.py [--history full|none] [--episodes 8] [--turns 8] [--max-new-tokens 8] [--repeats 2] [--threads 1]

SmolLM2-135M-Instruct on FrozenLake 4x4 (random maps, the agent's chat format), greedy by default so both play
the same episodes (the count of identical ones is reported: logits that differ by rounding can break a near-tie,
and at temperature 1 they move keyed draws in the tail of the vocabulary, where bins are 1e-5 wide); the two
alternate `--repeats` times so machine load hits both alike. Writes OUT/turn_cache.json: seconds per rollout,
the ratio, the prompt tokens a fresh prefill computes against those the kept cache computes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from agentrl_results import smollm2
from tandem.lm_as_agent.env import make_env_suite
from tandem.lm_as_agent.rollout import RolloutOptions, chat_format, episode_sampling, model_sampler, play_text_episodes
from tandem.generation.rollout import SamplingConfig
from tandem.models.loading import load_causal_lm, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--history", default="full", choices=["full", "none"])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-turn-cache"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_path = smollm2()
    tokenizer, model = load_tokenizer(model_path), load_causal_lm(model_path)
    fmt = chat_format(tokenizer, True)
    suite = make_env_suite("frozenlake:size=4")
    config = episode_sampling(SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature), fmt)
    seeds = list(range(args.episodes))
    options = RolloutOptions(max_turns=args.turns, history=args.history)
    full = args.history == "full"

    def rollout(keep: bool):
        envs = [suite.make("train") for _ in seeds]
        # fresh keeps nothing; kept is what agent-rl does (with full history: the turn cache and the instructions)
        sampler = model_sampler(model, tokenizer, config, key_base=2027, keep_cache=keep and full, keep_instructions=keep)
        timings: dict[str, float] = {}
        started, cpu = time.perf_counter(), time.process_time()
        episodes = play_text_episodes(model, tokenizer, fmt, envs, seeds, seeds, config, options, timings=timings,
                                      sampler=sampler)
        computed = (sampler.turns if full else sampler.kept).computed_tokens if keep else None
        return time.perf_counter() - started, time.process_time() - cpu, episodes, computed

    seconds: dict[str, list[float]] = {"fresh": [], "kept": []}
    cpu_seconds: dict[str, list[float]] = {"fresh": [], "kept": []}  # the process's CPU time: steadier on a shared machine
    identical = []
    for _ in range(args.repeats):
        fresh_s, fresh_cpu, fresh, _ = rollout(False)
        kept_s, kept_cpu, kept, computed = rollout(True)
        seconds["fresh"].append(fresh_s)
        seconds["kept"].append(kept_s)
        cpu_seconds["fresh"].append(fresh_cpu)
        cpu_seconds["kept"].append(kept_cpu)
        identical.append(sum(a.ids == b.ids for a, b in zip(fresh, kept)))
    turns = [len(e.turns) for e in kept]
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    summary = {"model": model_path, "history": args.history, "episodes": args.episodes, "max_turns": args.turns,
               "turns_played": turns, "max_new_tokens": args.max_new_tokens, "threads": args.threads,
               "seconds": seconds, "median_seconds": medians, "speedup": medians["fresh"] / medians["kept"],
               "cpu_seconds": cpu_seconds,
               "cpu_speedup": statistics.median(cpu_seconds["fresh"]) / statistics.median(cpu_seconds["kept"]),
               "identical_episodes": identical}
    if full:
        first_turns = sum(e.turns[0].prompt_length for e in kept)
        summary["prompt_tokens_fresh"] = sum(t.prompt_length for e in kept for t in e.turns)
        summary["prompt_tokens_kept"] = first_turns + computed
    else:  # the instructions' tokens computed over the rollout's turns
        summary["instruction_tokens_kept"] = computed
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "turn_cache.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
