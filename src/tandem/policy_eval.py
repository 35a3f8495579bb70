"""Held-out measurements against a built-in task's gold reward, and the policy's KL to a reference."""

from __future__ import annotations

from contextlib import nullcontext
from statistics import fmean

import torch

from tandem.data import pad_prompt_response_batch
from tandem.generation import completion_log_probs, sample


@torch.no_grad()
def sequence_kl(
    policy, reference, prompt_ids, completion_ids, pad_id: int, batch_size: int = 64, reference_context=nullcontext
) -> float:
    """Monte-Carlo KL(policy || reference) per sequence: mean over samples y ~ policy of log p(y|x) - log ref(y|x).

    `reference_context` is entered while the reference scores: a LoRA policy passes itself as the
    reference and `policy.disable_adapter` as the context, so its base model is the reference.
    """
    device = next(policy.parameters()).device
    total = 0.0
    for start in range(0, len(prompt_ids), batch_size):
        batch = pad_prompt_response_batch(
            prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size], pad_id
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        policy_logps, _ = completion_log_probs(policy, batch)
        with reference_context():
            reference_logps, _ = completion_log_probs(reference, batch)
        total += float((policy_logps - reference_logps).sum())
    return total / max(len(prompt_ids), 1)


def gold_eval(
    model, tokenizer, task, eval_rows: list[dict], temperature: float | None = None, seed: int = 0, reference=None,
    reference_context=nullcontext, max_new_tokens: int | None = None, engine=None,
) -> dict[str, float]:
    """Decode a completion for each held-out prompt and score it with the task's gold reward.

    By default the task decides how: sampling at temperature 1 (fixed seed) measures the policy itself,
    as RLHF papers do; greedy decoding gives exact-match accuracy for tasks with one right answer.
    With a `reference` model, also the KL of the policy to it on its own samples at temperature 1.
    `engine` (one made from `model`, see `tandem.generation.engines`) generates instead of `model.generate`.
    """
    temperature = task.eval_temperature if temperature is None else temperature
    max_new_tokens = max_new_tokens or task.max_new_tokens
    prompts = [row["prompt"] for row in eval_rows]
    samples = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                     engine=engine)
    columns = {key: [row[key] for row in eval_rows] for key in eval_rows[0] if key != "prompt"} if eval_rows else {}
    rewards = task.gold_reward(prompts, samples.texts, **columns)
    metrics = {
        "gold_reward": fmean(rewards) if rewards else float("nan"),
        "completion_chars": fmean(len(c) for c in samples.texts) if samples.texts else 0.0,
    }
    if reference is not None:
        if temperature != 1.0:
            samples = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed,
                             engine=engine)
        metrics["kl_to_reference"] = sequence_kl(model, reference, samples.prompt_ids, samples.completion_ids,
                                                 tokenizer.pad_token_id, reference_context=reference_context)
    return metrics
