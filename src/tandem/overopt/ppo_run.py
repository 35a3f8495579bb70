"""PPO against any reward source, with the reward-hacking monitor in the loop and proxy/gold/KL evaluations.

`MonitoredPPOTrainer` is tandem's `PPOTrainer` with one change, its evaluation: each evaluation samples the
held-out prompts at temperature 1 with a fixed seed (`eval_seed`) and logs the gold reward, the proxy reward
being optimised and KL(policy || reference) per sequence (`sequence_kl`) as `eval/gold_reward`,
`eval/proxy_reward` and `eval/kl_to_reference` (`evaluate_policy`).

Feeding the monitor is not this trainer's doing: a `RewardHackingMonitor` is a callback of the online loop
(`tandem.trainers.callbacks`); after each rollout it computes the gold reward of the rollout's completions
(the trainer's task) and records the step's proxy reward, gold reward and per-sequence KL; its
`monitor/*` metrics are logged among the step's `train/*` metrics. `run_monitored_ppo` runs `tandem ppo`
with a given reward source and passes the given monitor to `run_online`.
"""

from __future__ import annotations

from statistics import fmean

import torch

from tandem.evaluation import sequence_kl
from tandem.generation import sample
from tandem.diagnostics.monitor import RewardHackingMonitor
from tandem.trainers.loop import TrainResult
from tandem.trainers.online import run_online
from tandem.trainers.ppo import PPOConfig, PPOTrainer


@torch.no_grad()
def evaluate_policy(model, tokenizer, task, prompts: list[str], reward, reference, seed: int = 0,
                    batch_size: int = 64) -> dict[str, float]:
    """Gold reward, proxy reward and sequence KL to `reference` of the policy's own samples (temperature 1).

    The samples' seed is fixed, so two policies are compared on the same random numbers.
    """
    samples = sample(model, tokenizer, prompts, max_new_tokens=task.max_new_tokens, temperature=1.0, seed=seed,
                     batch_size=batch_size)
    gold = task.gold_reward(prompts, samples.texts)
    proxy = [score for score in reward(prompts, samples.texts) if score is not None]
    kl = 0.0 if reference is model else sequence_kl(model, reference, samples.prompt_ids, samples.completion_ids,
                                                    tokenizer.pad_token_id)
    return {"gold": fmean(gold), "proxy": fmean(proxy) if proxy else float("nan"), "kl": kl}


class MonitoredPPOTrainer(PPOTrainer):
    """PPO whose evaluations measure proxy, gold and KL (the monitor itself is fed by every online trainer)."""

    def __init__(self, *args, eval_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_seed = eval_seed

    def evaluate(self, model) -> dict[str, float]:
        if not self.eval_prompts:
            return {}
        prompts = [row["prompt"] for row in self.eval_prompts]
        point = evaluate_policy(model, self.tokenizer, self.task, prompts, self.reward, self.reference, self.eval_seed)
        return {"eval/gold_reward": point["gold"], "eval/proxy_reward": point["proxy"],
                "eval/kl_to_reference": point["kl"]}


def run_monitored_ppo(config: PPOConfig, reward, task, eval_prompts: list[dict],
                      monitor: RewardHackingMonitor) -> TrainResult:
    """`tandem ppo` from `config.model` against the reward source `reward` (instead of `config.reward`)."""
    return run_online(config, MonitoredPPOTrainer, reward=reward, eval_prompts=eval_prompts, monitor=monitor,
                      eval_seed=config.seed)
