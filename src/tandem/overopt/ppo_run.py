"""PPO against any reward source, with the reward-hacking monitor in the loop and proxy/gold/KL evaluations.

Both plug into tandem's `PPOTrainer` as callbacks of the online loop (`tandem.trainers.callbacks`):

- `ProxyGoldEvaluation` is the run's evaluation: each evaluation samples the held-out prompts at temperature
  1 with a fixed seed (`eval_seed`) and logs the gold reward, the proxy reward being optimised and
  KL(policy || reference) per sequence (`sequence_kl`) as `eval/gold_reward`, `eval/proxy_reward` and
  `eval/kl_to_reference` (`evaluate_policy`); the trainer's own evaluation gets no prompts.
- a `RewardHackingMonitor`, after each rollout, computes the gold reward of the rollout's completions (the
  trainer's task) and records the step's proxy reward, gold reward and per-sequence KL; its `monitor/*`
  metrics are logged among the step's `train/*` metrics.

`run_monitored_ppo` runs `tandem ppo` with a given reward source, the given monitor and that evaluation.
"""

from __future__ import annotations

from statistics import fmean

import torch

from tandem.policy_eval import sequence_kl
from tandem.generation import sample
from tandem.diagnostics.monitor import RewardHackingMonitor
from tandem.trainers.callbacks import Callback
from tandem.trainers.loop import TrainResult
from tandem.trainers.online import run_online
from tandem.trainers.ppo import PPOConfig, PPOTrainer


@torch.no_grad()
def evaluate_policy(model, tokenizer, task, prompts: list[str], reward, reference, seed: int = 0,
                    batch_size: int = 64, engine=None) -> dict[str, float]:
    """Gold reward, proxy reward and sequence KL to `reference` of the policy's own samples (temperature 1).

    The samples' seed is fixed, so two policies are compared on the same random numbers. `engine` (one holding
    `model`'s current weights, e.g. the trainer's synced vLLM engine) samples instead of `model.generate`.
    """
    samples = sample(model, tokenizer, prompts, max_new_tokens=task.max_new_tokens, temperature=1.0, seed=seed,
                     batch_size=batch_size, engine=engine)
    gold = task.gold_reward(prompts, samples.texts)
    proxy = [score for score in reward(prompts, samples.texts) if score is not None]
    kl = 0.0 if reference is model else sequence_kl(model, reference, samples.prompt_ids, samples.completion_ids,
                                                    tokenizer.pad_token_id)
    return {"gold": fmean(gold), "proxy": fmean(proxy) if proxy else float("nan"), "kl": kl}


class ProxyGoldEvaluation(Callback):
    """Each evaluation of a run: gold, proxy and KL to the reference of the policy's own samples (`evaluate_policy`)."""

    def __init__(self, eval_prompts: list[dict], eval_seed: int = 0):
        self.prompts = [row["prompt"] for row in eval_prompts]
        self.eval_seed = eval_seed

    def on_evaluate(self, trainer, step: int, metrics: dict[str, float]) -> dict[str, float] | None:
        if not self.prompts:
            return None
        model = trainer.accelerator.unwrap_model(trainer.model)
        engine = trainer.engine if trainer.engine.owns_weights else None  # vLLM: synced after every update
        point = evaluate_policy(model, trainer.tokenizer, trainer.task, self.prompts, trainer.reward, trainer.reference,
                                self.eval_seed, engine=engine)
        return {"eval/gold_reward": point["gold"], "eval/proxy_reward": point["proxy"],
                "eval/kl_to_reference": point["kl"]}


def run_monitored_ppo(config: PPOConfig, reward, task, eval_prompts: list[dict],
                      monitor: RewardHackingMonitor) -> TrainResult:
    """`tandem ppo` from `config.model` against the reward source `reward` (instead of `config.reward`)."""
    return run_online(config, PPOTrainer, reward=reward, eval_prompts=[], monitor=monitor,
                      callbacks=[ProxyGoldEvaluation(eval_prompts, eval_seed=config.seed)])
