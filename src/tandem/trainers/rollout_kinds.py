"""Rollout kinds of the one RL trainer: what a step samples and scores, and how the policy is evaluated.

`OnlineTrainer` (rollout -> score -> advantages -> update) asks its rollout kind for each step's rows:
`PromptRollouts` samples completions of prompts and scores them with a reward (PPO, GRPO, RLAIF, ...), with
DAPO's dynamic sampling; `tandem.lm_as_agent.episodes.EpisodeRollouts` plays multi-turn episodes in an environment
(the language model as the agent). Both hand back a `Sampled` record; the update, the advantage and loss
registries, micro-batching, the mismatch metric and the no-signal watch are the trainer's, shared by both.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import torch

from tandem.algorithms.advantages import informative_groups
from tandem.policy_eval import gold_eval
from tandem.generation.rollout import RolloutBatch, SamplingConfig, concat_rollouts, select_rows
from tandem.models.loading import reference_and_context
from tandem.rewards import score_safely
from tandem.rewards.safety import RewardError


@dataclass
class Sampled:
    """One step's rows as a rollout kind hands them to the trainer: the rows, a score per row, which scores are
    valid (a reward error left out), and the kind's own statistics."""

    batch: RolloutBatch
    scores: torch.Tensor
    valid: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)
    prefill: object | None = None  # the prompts' forward the rollout kept (`tandem.generation.prefill_graph`)


class RolloutKind:
    """What a step samples (`sample`) and how the policy is measured (`evaluate`); the rest has defaults."""

    group_size: int = 1  # rows compared with each other by a group advantage (samples of one prompt / start state)

    def sample(self, step: int, times: dict[str, float]) -> Sampled:
        raise NotImplementedError

    def evaluate(self, model) -> dict[str, float]:
        return {}

    def state(self) -> dict:
        """What a checkpoint keeps of this kind (restored by `load_state`)."""
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def finish(self, result) -> None:
        """After training (main process): reports of the kind's own."""


class PromptRollouts(RolloutKind):
    """Completions of the trainer's prompts (`train_data`), scored by its reward, checked for errors and NaN."""

    def __init__(self, trainer, reward, max_new_tokens: int):
        cfg = trainer.config
        self.trainer, self.reward, self.group_size = trainer, reward, cfg.samples_per_prompt
        self._seen_counts: dict[str, int] = {}  # a reward's status counts at the last step (`_status_counts`)
        self.sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                       top_k=cfg.top_k, samples_per_prompt=cfg.samples_per_prompt,
                                       stop_strings=list(cfg.stop_strings))

    # ---- sampling and scoring ------------------------------------------------------------------
    def sample(self, step: int, times: dict[str, float]) -> Sampled:
        rows = self._prompt_rows(step)
        batch, scores, valid, stats = self._sample_and_score(rows, times, self._sample_keys(step, 0, len(rows)))
        self._log_example_rewards(step, scores, valid)
        if self.trainer.config.dynamic_sampling:
            batch, scores, valid, dynamic_stats = self._dynamic_sampling(step, len(rows), batch, scores, valid, times)
            stats = {**stats, **dynamic_stats}
        return Sampled(batch, scores, valid, stats)

    @torch.no_grad()
    def _score_batch(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor, dict]:
        cfg = self.trainer.config
        scored = score_safely(self.reward, batch.prompts, batch.completions, batch.columns, on_error=cfg.reward_errors,
                              bound=cfg.reward_bound, timeout=cfg.reward_timeout)
        if scored.report.n_skipped == len(batch.prompts):  # "skip" with nothing left is no run at all
            raise RewardError(scored.report.problems[0])
        valid = torch.tensor([r is not None for r in scored.rewards], device=batch.input_ids.device)
        scores = torch.tensor([r if r is not None else 0.0 for r in scored.rewards], device=batch.input_ids.device)
        return scores, valid, {"reward_skipped": float(scored.report.n_skipped), **self._status_counts()}

    def _status_counts(self) -> dict[str, float]:
        """This step's count of each way a reward's runs ended, for rewards that keep `counts` (code execution:
        ok, error, timeout, ...), as `reward_status/NAME`."""
        counts = getattr(self.reward, "counts", None)
        if not isinstance(counts, dict):
            return {}
        seen, self._seen_counts = self._seen_counts, dict(counts)
        return {f"reward_status/{k}": float(v - seen.get(k, 0)) for k, v in counts.items()}

    def _prompt_indices(self, step: int) -> list[int]:
        trainer = self.trainer
        indices = trainer._global_indices(step)
        share = len(indices) // trainer.world
        return indices[trainer.rank * share : (trainer.rank + 1) * share]

    def _prompt_rows(self, step: int) -> list[dict]:
        return [self.trainer.train_data[i] for i in self._prompt_indices(step)]

    def _log_example_rewards(self, step: int, scores: torch.Tensor, valid: torch.Tensor) -> None:
        """Mean reward of each training prompt this step, one JSON line per prompt, in `example_rewards.jsonl`.

        One-shot RLVR (Wang et al. 2025) picks its example by the variance of these across epochs.
        """
        trainer = self.trainer
        epoch = step // trainer.steps_per_epoch
        group = self.group_size
        name = "example_rewards.jsonl" if trainer.world == 1 else f"example_rewards.rank{trainer.rank}.jsonl"
        with open(trainer.out / name, "a", encoding="utf-8") as f:
            for k, index in enumerate(self._prompt_indices(step)):
                rows = slice(k * group, (k + 1) * group)
                if valid[rows].any():
                    f.write(json.dumps({"step": step + 1, "epoch": epoch, "index": index,
                                        "reward": float(scores[rows][valid[rows]].mean())}) + "\n")

    def _sample_keys(self, step: int, round_: int, n_prompts: int) -> torch.Tensor:
        """One key per row (prompt x sample): its place in the step's global batch (round 0), or for dynamic
        sampling's refills (rounds >= 1, drawn per process) in this process's refill."""
        trainer = self.trainer
        first = trainer.rank * n_prompts * self.group_size
        base = ((trainer.config.seed * 1_000_003 + step) * 101 + round_) * 1_048_583 + (first if round_ == 0 else 0)
        offset = 0 if round_ == 0 else trainer.rank * 65_537
        return base + offset + torch.arange(n_prompts * self.group_size)

    def _sample_and_score(self, rows: list[dict], times: dict, keys: torch.Tensor | None = None
                          ) -> tuple[RolloutBatch, torch.Tensor, torch.Tensor, dict]:
        columns = {key: [row.get(key) for row in rows] for key in rows[0] if key != "prompt"}
        t0 = time.perf_counter()
        # hf: in the precision the update trains in (bf16 matmuls: ~3x faster on AMX)
        batch = self.trainer.engine.rollout([r["prompt"] for r in rows], self.sampling, columns, sample_keys=keys)
        batch = batch.to(self.trainer.accelerator.device)
        times["time/generate"] = times.get("time/generate", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        scores, valid, reward_stats = self._score_batch(batch)
        times["time/score"] = times.get("time/score", 0.0) + time.perf_counter() - t0
        return batch, scores, valid, reward_stats

    def _refill_rows(self, step: int, round_: int, n: int) -> list[dict]:
        """Fresh prompts for dynamic sampling, drawn reproducibly from (seed, step, round, rank)."""
        trainer = self.trainer
        seed = ((trainer.config.seed * 1_000_003 + step) * 101 + round_) * 257 + trainer.rank
        picks = torch.randint(len(trainer.train_data), (n,), generator=torch.Generator().manual_seed(seed))
        return [trainer.train_data[i] for i in picks.tolist()]

    def _dynamic_sampling(self, step: int, n_groups: int, batch, scores, valid, times: dict):
        """DAPO: keep the groups whose rewards differ, sample more prompts until `n_groups` are kept.

        Each rank fills its own batch, so every rank trains on the same number of rows; a batch
        still short after `max_sampling_rounds` rollouts is topped up with dropped (zero-advantage) groups.
        """
        trainer = self.trainer
        kept, dropped, informative_counts = [], [], []
        rounds, n_kept = 0, 0
        while True:
            rounds += 1
            informative = informative_groups(scores, batch.group_ids, valid)
            informative_counts.append(float(informative.float().mean()))
            for pieces, chosen in ((kept, informative), (dropped, ~informative)):
                rows = chosen.nonzero().flatten().tolist()
                pieces.append((select_rows(batch, rows), scores[chosen], valid[chosen]))
            n_kept += len(torch.unique(batch.group_ids[informative]))
            done = n_kept >= n_groups or rounds >= trainer.config.max_sampling_rounds
            if trainer.gathers and trainer.world > 1:  # sharded weights: sampling is collective, every process goes on
                done = trainer._all_reduce_max(float(not done)) == 0.0
            if done:
                break
            batch, scores, valid, _ = self._sample_and_score(self._refill_rows(step, rounds, n_groups), times,
                                                             self._sample_keys(step, rounds, n_groups))
        pieces = [p for p in kept + dropped if p[0].input_ids.shape[0]]
        merged = concat_rollouts([p[0] for p in pieces], trainer.tokenizer.pad_token_id)
        rows = (merged.group_ids < n_groups).nonzero().flatten().tolist()
        scores = torch.cat([p[1] for p in pieces])[rows]
        valid = torch.cat([p[2] for p in pieces])[rows]
        stats = {"dynamic/rounds": float(rounds), "dynamic/informative_fraction": informative_counts[0],
                 "dynamic/filler_groups": float(max(n_groups - n_kept, 0))}
        return select_rows(merged, rows), scores, valid, stats

    # ---- evaluation ------------------------------------------------------------------------------
    def evaluate(self, model) -> dict[str, float]:
        trainer = self.trainer
        if trainer.task is None or not trainer.eval_prompts:
            return {}
        length = trainer.eval_max_new_tokens
        reference, reference_context = reference_and_context(model, trainer.reference)
        # an engine with its own copy (vLLM, synced after every update) samples faster than `generate`
        engine = trainer.engine if trainer.engine.owns_weights else None
        gold = gold_eval(model, trainer.tokenizer, trainer.task, trainer.eval_prompts, reference=reference,
                         reference_context=reference_context, max_new_tokens=length, engine=engine)
        metrics = {f"eval/{k}": v for k, v in gold.items()}
        if trainer.task.eval_temperature != trainer.config.temperature:
            # greedy exact match moves only when the mode flips; the policy RL trains is the sampling one
            sampled = gold_eval(model, trainer.tokenizer, trainer.task, list(trainer.eval_prompts) * 4,
                                temperature=trainer.config.temperature, max_new_tokens=length, engine=engine)
            metrics["eval/gold_reward_sampled"] = sampled["gold_reward"]
        return metrics
