"""Held-out measurements against a built-in task's gold reward."""

from __future__ import annotations

from statistics import fmean

from tandem.generation import generate_completions


def gold_eval(model, tokenizer, task, eval_rows: list[dict], temperature: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Sample a completion for each held-out prompt and score it with the task's gold reward.

    Sampling at temperature 1 (with a fixed seed) measures the policy itself, as RLHF papers do;
    greedy decoding would measure only its most likely continuation.
    """
    prompts = [row["prompt"] for row in eval_rows]
    completions = generate_completions(
        model, tokenizer, prompts, max_new_tokens=task.max_new_tokens, temperature=temperature, seed=seed
    )
    columns = {key: [row[key] for row in eval_rows] for key in eval_rows[0] if key != "prompt"} if eval_rows else {}
    rewards = task.gold_reward(prompts, completions, **columns)
    return {"gold_reward": fmean(rewards) if rewards else float("nan"), "completion_chars": fmean(len(c) for c in completions)}
