"""Held-out measurements against a built-in task's gold reward."""

from __future__ import annotations

from statistics import fmean

from tandem.generation import generate_completions


def gold_eval(model, tokenizer, task, eval_rows: list[dict], temperature: float | None = None, seed: int = 0) -> dict[str, float]:
    """Decode a completion for each held-out prompt and score it with the task's gold reward.

    By default the task decides how: sampling at temperature 1 (fixed seed) measures the policy itself,
    as RLHF papers do; greedy decoding gives exact-match accuracy for tasks with one right answer.
    """
    temperature = task.eval_temperature if temperature is None else temperature
    prompts = [row["prompt"] for row in eval_rows]
    completions = generate_completions(
        model, tokenizer, prompts, max_new_tokens=task.max_new_tokens, temperature=temperature, seed=seed
    )
    columns = {key: [row[key] for row in eval_rows] for key in eval_rows[0] if key != "prompt"} if eval_rows else {}
    rewards = task.gold_reward(prompts, completions, **columns)
    return {"gold_reward": fmean(rewards) if rewards else float("nan"), "completion_chars": fmean(len(c) for c in completions)}
