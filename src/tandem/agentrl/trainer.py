"""`tandem agent-rl`: the language model itself as the policy pi(a | s, l), trained by RL over many turns.

Each step takes `batch_size` training start states (seeds: maps, missions, problems), plays
`episodes_per_start` episodes from each with the current policy (`rollout.run_episodes`: all active episodes
sample their turns in one batched call; the ids trained on are exactly the ids sampled), turns episode
outcomes into advantages, and updates the policy on the model's own tokens only.

Credit (``--advantage``):
- ``grpo`` / ``dr_grpo`` / ``rloo``: trajectory level. An episode's return R (environment rewards, plus LM
  shaping when on) is compared within its group of episodes from the same start state, A = (R - mean) / std
  (Shao et al. 2024; Dr. GRPO without the std, Liu et al. 2025; RLOO's leave-one-out baseline, Ahmadian et
  al. 2024), and every token of every turn of the episode gets A.
- ``ppo``: turn level. A value head reads the state before each assistant turn; GAE over turns
  (Schulman et al. 2016; delta_t = r_t + gamma V_{t+1} - V_t with the turn's reward r_t), whitened, gives
  each turn's tokens their advantage, and the value head regresses on the returns (as in ArCHer / verl's
  multi-turn PPO, at turn rather than token granularity).
The policy loss is the registered one (``ppo_clip`` by default; `tandem.algorithms.policy_losses`).

Evaluation plays held-out start states (seeds the training never uses) and reports the success
rate, return, invalid-action rate and turns, before training (zero-shot) and after; first and last episode
transcripts, `metrics.jsonl`, `curves.png` and `report.json` go to the run directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator
from transformers import set_seed

from tandem.agentrl.env import EnvSuite, check_env_spec, make_env_suite
from tandem.agentrl.rollout import Episode, RolloutOptions, TrainingRows, chat_format, run_episodes, training_rows
from tandem.algorithms.advantages import (
    SCORE_ONLY, AdvantageInputs, compute_advantages, gae_advantages, masked_mean, whiten,
)
from tandem.algorithms.kl import KL_ESTIMATORS, kl_estimate
from tandem.algorithms.losses import IGNORE_INDEX, token_log_probs
from tandem.algorithms.policy_losses import (
    LOSS_AGGREGATIONS, POLICY_LOSSES, aggregate_loss, clipped_value_loss, token_entropy, global_normaliser,
    policy_loss,
)
from tandem.config import TrainConfig, registered_name
from tandem.files import atomic_write_text
from tandem.generation.rollout import SamplingConfig
from tandem.generation.scoring import completion_logits, logits_to_keep, rows_within_memory
from tandem.models.loading import add_lora, load_causal_lm, load_tokenizer, reference_and_context
from tandem.plotting import headless_pyplot
from tandem.trainers.loop import Trainer, TrainResult
from tandem.trainers.setup import prepare_run
from tandem.trainers.sft import LoRAOptions

ADVANTAGES = ("grpo", "dr_grpo", "rloo", "ppo")


class AgentRLConfig(TrainConfig, LoRAOptions):
    """Multi-turn RL of a language-model agent in a text environment."""

    out: Path = Field(Path("runs/agent-rl"), description="Run directory: config, metrics, transcripts, curves, report and the model.")
    model: Path = Field(Path("tiny"), description="The policy: a Hugging Face model directory, a .gguf file or a LoRA adapter folder; 'tiny' builds a tiny model that acts uniformly at random among valid actions (in OUT/init) to start from.")
    ref_model: Path | None = Field(None, description="Frozen reference for --kl-coef (default: --model).")
    env: str = Field("frozenlake:size=4", description="Environment: a Gymnasium id (CliffWalking-v1, BabyAI-GoToObj-v0, ...) or a kind: frozenlake:size=4, corridor:length=3, babyai:GoToObj, task:arithmetic, tools:..., textarena:GAME, textworld:..., worldmodel:PATH.")
    max_turns: int | None = Field(None, ge=1, description="Turns before an episode is cut (marked truncated; default: the environment's).")
    history: Literal["full", "none"] = Field("full", description="full: the whole conversation in context (one training row per episode); none: each turn sees the instructions and the current observation only (Markov worlds; far cheaper).")
    max_context: int = Field(2048, ge=16, description="Tokens an episode may hold (history full); one that cannot fit another reply ends, truncated.")
    invalid_action: Literal["penalty", "retry", "end"] = Field("penalty", description="A reply naming no action: penalty (reward --invalid-penalty, asked again), retry (asked again, no penalty) or end (the episode ends with the penalty).")
    invalid_penalty: float = Field(-0.1, description="Reward of an invalid action.")
    batch_size: int = Field(4, ge=1, description="Training start states per step.")
    episodes_per_start: int = Field(8, ge=1, description="Episodes from each start state: the group of trajectory-level GRPO / RLOO.")
    micro_batch_size: int = Field(8, ge=1, description="Training rows per forward pass in the update.")
    micro_batch_memory: float | None = Field(4.0, gt=0, description="GB of activations one update micro-batch may keep for its backward, estimated from the model's depth and width: long episodes of a large model take fewer rows than --micro-batch-size, the result the same (none: always --micro-batch-size).")
    n_train_starts: int = Field(1000, ge=1, description="Training start states (seeds 0..N-1).")
    n_eval: int = Field(64, ge=0, description="Held-out start states for evaluation (seeds training never uses).")
    eval_temperature: float | None = Field(None, ge=0, description="Sampling temperature of evaluation episodes (default: --temperature, the policy RL trains; 0: greedy).")
    eval_zero_shot: bool = Field(True, description="Evaluate before the first update too (the zero-shot success rate).")
    max_new_tokens: int = Field(32, ge=1, description="Longest reply per turn.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of training episodes.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0: off).")
    advantage: str = Field("grpo", description="Credit: grpo, dr_grpo, rloo (trajectory level, per group of episodes) or ppo (turn level, value head + GAE over turns).")
    gamma: float = Field(0.99, ge=0, le=1, description="Discount per turn (ppo's GAE, and the shaping term gamma Phi(s') - Phi(s)).")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda over turns (ppo).")
    vf_coef: float = Field(0.1, ge=0, description="Value loss weight (ppo).")
    value_clip: float | None = Field(0.2, description="Value clipping range (ppo; none: unclipped).")
    policy_loss: str = Field("ppo_clip", description="Policy loss: ppo_clip, gspo or reinforce.")
    loss_agg: str = Field("token-mean", description="Loss aggregation: token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm.")
    kl_coef: float = Field(0.0, ge=0, description="Weight of the per-token KL to the reference in the loss (0: no reference loaded).")
    kl_estimator: str = Field("k3", description="KL estimator: k1, k2, k3, abs, low_var_kl.")
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus weight.")
    update_epochs: int = Field(1, ge=1, description="Passes over each step's episodes.")
    minibatches: int = Field(1, ge=1, description="Optimizer steps per pass.")
    shaping_model: Path | None = Field(None, description="A language model rating progress 0-9 (tandem.agents.backends.HFBackend): potential-based shaping gamma Phi(s') - Phi(s) added to each turn's reward.")
    shaping_scale: float = Field(1.0, description="Phi = scale x the shaping model's progress rating in [0, 1].")
    no_signal_patience: int = Field(3, ge=1, description="Warn after this many steps in a row whose groups all have equal returns (nothing to learn).")
    transcripts: int = Field(4, ge=0, description="Evaluation episodes written to transcripts/ at the first and the last evaluation.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of AdamW (pretrained models: 1e-5).")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Fraction of steps with linear warm-up.")
    schedule: Literal["cosine", "linear", "constant"] = Field("constant", description="Learning-rate decay after warm-up.")
    max_steps: int | None = Field(30, ge=1, description="RL steps to run.")
    log_every: int = Field(1, ge=1, description="Write metrics every N steps.")

    # a pretrained model: a fine-tuning learning rate (measured on SmolLM2-135M-Instruct; tiny models need ~1e-3)
    pretrained_defaults = {"lr": 1e-5}

    @field_validator("advantage", "policy_loss", "kl_estimator", "loss_agg")
    @classmethod
    def _registered(cls, value: str, info) -> str:
        table = {"advantage": ADVANTAGES, "policy_loss": POLICY_LOSSES, "kl_estimator": KL_ESTIMATORS,
                 "loss_agg": LOSS_AGGREGATIONS}
        return registered_name(value, table[info.field_name], info.field_name.replace("_", " "))

    @field_validator("env")
    @classmethod
    def _known_env(cls, value: str) -> str:
        return check_env_spec(value)


def episode_advantages(name: str, returns: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Trajectory-level advantage of each episode from its return and its group (start state): the registered
    estimator `name`, which must read scores only, with each episode as a one-token sequence scored by its return."""
    if not SCORE_ONLY.get(name, False):
        raise ValueError(f"{name!r} is not a trajectory-level advantage")
    mask = torch.ones(len(returns), 1, dtype=torch.bool, device=returns.device)
    advantages, _ = compute_advantages(name, AdvantageInputs(rewards=returns.unsqueeze(-1), mask=mask, group_ids=groups))
    return advantages.squeeze(-1)


def turn_tables(episodes: list[Episode]) -> tuple[torch.Tensor, torch.Tensor]:
    """(episodes, max turns) rewards and the mask of real turns, for GAE over turns."""
    width = max(len(e.turns) for e in episodes)
    rewards = torch.zeros(len(episodes), width)
    mask = torch.zeros(len(episodes), width, dtype=torch.bool)
    for i, episode in enumerate(episodes):
        for t, turn in enumerate(episode.turns):
            rewards[i, t], mask[i, t] = turn.reward, True
    return rewards, mask


def turn_value_positions(rows: TrainingRows) -> dict[tuple[int, int], tuple[int, int]]:
    """(episode, turn) -> (row, position) of the token whose value V(s_t) is read: the one before the turn's first
    sampled token (the last token of what the model saw)."""
    turn = rows.turn
    previous = torch.nn.functional.pad(turn[:, :-1], (1, 0), value=-1)
    rows_at, positions = ((turn >= 0) & (turn != previous)).nonzero(as_tuple=True)  # each turn's first sampled token
    episodes, turns = rows.episode[rows_at].tolist(), turn[rows_at, positions].tolist()
    return {(e, t): (r, p - 1) for e, t, r, p in zip(episodes, turns, rows_at.tolist(), positions.tolist())}


def episode_metrics(episodes: list[Episode]) -> dict[str, float]:
    n = max(len(episodes), 1)
    turns = sum(len(e.turns) for e in episodes)
    return {
        "success_rate": sum(e.success for e in episodes) / n,
        "return": sum(e.env_return for e in episodes) / n,
        "invalid_rate": sum(e.invalid_actions for e in episodes) / max(turns, 1),
        "turns": turns / n,
        "truncated_fraction": sum(e.truncated for e in episodes) / n,
        "tool_calls": sum(t.tool for e in episodes for t in e.turns) / n,
        "cut_reply_fraction": sum(not t.ended for e in episodes for t in e.turns) / max(turns, 1),
    }


def env_steps(episodes: list[Episode]) -> int:
    """Actions the environment carried out (invalid replies and tool calls do not step it)."""
    return sum(not t.invalid and not t.tool for e in episodes for t in e.turns)


class AgentRLTrainer(Trainer):
    name = "agent-rl"

    def __init__(self, config: AgentRLConfig, model, tokenizer, suite: EnvSuite, chat: bool, reference=None,
                 shaping=None):
        super().__init__(config, model, tokenizer, list(range(config.n_train_starts)))
        self.suite, self.shaping = suite, shaping
        self.format = chat_format(tokenizer, chat)
        self.reference = reference.to(self.accelerator.device).eval().requires_grad_(False) if reference is not None else None
        self.options = RolloutOptions(max_turns=config.max_turns or suite.max_turns, max_context=config.max_context,
                                      history=config.history)
        self.sampling = SamplingConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                       top_p=config.top_p, top_k=config.top_k)
        self.train_envs = [suite.make("train") for _ in range(self._local_starts() * config.episodes_per_start)]
        self.eval_envs: list = []
        self.dead_steps = 0
        self.warned = False
        self.steps_with_signal = 0
        self.real_env_steps = 0
        self.evaluations: list[dict] = []

    # ---- sizes ---------------------------------------------------------------------------------
    def _accumulation_steps(self) -> int:
        if self.world > 1:  # episodes differ in length per process: micro-batch counts would not line up under DDP
            raise ValueError("agent-rl runs in one process for now (launched on several, the processes' update "
                             "steps would not line up); run it without accelerate launch / torchrun")
        return 1

    def _local_starts(self) -> int:
        return self.config.batch_size // self.world

    def optimizer_steps_per_step(self) -> int:
        return self.config.update_epochs * self.config.minibatches

    @property
    def needs_values(self) -> bool:
        return self.config.advantage == "ppo"

    # ---- model ----------------------------------------------------------------------------------
    def _forward(self, model, rows: TrainingRows, index, labels):
        input_ids, attention = rows.input_ids[index], rows.attention_mask[index]
        keep = logits_to_keep(model, labels)  # the head only where this micro-batch's replies are
        output = model(input_ids=input_ids, attention_mask=attention, use_cache=False, **keep)
        values = output["values"] if self.needs_values else None  # (ModelOutput.values is the dict method)
        return output.logits / self.config.temperature, values

    def _labels(self, rows: TrainingRows) -> torch.Tensor:
        return rows.input_ids.masked_fill(rows.loss_mask == 0, IGNORE_INDEX)

    # ---- a step ------------------------------------------------------------------------------------
    def _episodes(self, step: int, timings: dict) -> list[Episode]:
        indices = self._global_indices(step)
        share = len(indices) // self.world
        starts = [self.train_data[i] for i in indices[self.rank * share:(self.rank + 1) * share]]
        group_size = self.config.episodes_per_start
        seeds = [s for s in starts for _ in range(group_size)]
        groups = [k for k in range(len(starts)) for _ in range(group_size)]
        model = self.accelerator.unwrap_model(self.model)
        with self.accelerator.autocast():
            return run_episodes(model, self.tokenizer, self.format, self.train_envs, seeds, groups, self.sampling,
                                self.options, shaping=self.shaping, gamma=self.config.gamma, timings=timings)

    @torch.no_grad()
    def _old_forward(self, rows: TrainingRows):
        """log pi_old, log pi_ref and values of every row (no gradient), in micro-batches."""
        labels = self._labels(rows)
        model = self.accelerator.unwrap_model(self.model)
        reference, context = reference_and_context(model, self.reference) if self.config.kl_coef else (None, None)
        old, ref, values = [], [], []
        for start in range(0, len(rows), self.config.micro_batch_size):
            index = slice(start, start + self.config.micro_batch_size)
            with self.accelerator.autocast():
                logits, value = self._forward(model, rows, index, labels[index])
                old.append(token_log_probs(logits, labels[index])[0].float())
                values.append(value.float() if value is not None else None)
                if reference is not None:
                    with context():
                        ref_logits = completion_logits(reference, labels[index], input_ids=rows.input_ids[index],
                                                       attention_mask=rows.attention_mask[index]) / self.config.temperature
                    ref.append(token_log_probs(ref_logits, labels[index])[0].float())
        return (torch.cat(old), torch.cat(ref) if ref else None,
                torch.cat(values) if values and values[0] is not None else None)

    def _advantages(self, episodes: list[Episode], rows: TrainingRows, values) -> tuple[torch.Tensor, dict, dict]:
        """Per-token advantages (rows, L-1) aligned with the shifted log-probs, plus what the value loss needs."""
        cfg = self.config
        mask = rows.loss_mask[:, 1:].bool()
        turn = rows.turn[:, 1:]
        stats: dict[str, float] = {}
        value_targets: dict = {}
        if cfg.advantage != "ppo":
            returns = torch.tensor([e.total_reward for e in episodes], dtype=torch.float32)
            groups = torch.tensor([e.group for e in episodes])
            per_episode = episode_advantages(cfg.advantage, returns, groups)
            advantages = per_episode[rows.episode].unsqueeze(-1).expand_as(mask).clone()
            return torch.where(mask, advantages, 0.0), stats, value_targets
        # turn level: V(s_t) before each turn, GAE over the turns of each episode, whitened over the batch
        rewards, turn_mask = turn_tables(episodes)
        positions = turn_value_positions(rows)
        turn_values = torch.zeros_like(rewards)
        for (e, t), (r, p) in positions.items():
            turn_values[e, t] = values[r, p]
        turn_adv, turn_returns = gae_advantages(rewards, turn_values, turn_mask, gamma=cfg.gamma, lam=cfg.lam)
        turn_adv = whiten(turn_adv, turn_mask)
        advantages = torch.zeros(mask.shape)
        episode_of_row = rows.episode.unsqueeze(-1).expand_as(turn)
        real = turn >= 0
        advantages[real] = turn_adv[episode_of_row[real], turn[real]]
        value_targets = {"positions": positions, "returns": turn_returns, "old_values": turn_values}
        stats["value/mean"] = float(masked_mean(turn_values, turn_mask))
        return torch.where(mask, advantages, 0.0), stats, value_targets

    def _signal(self, episodes: list[Episode], step: int) -> dict[str, float]:
        """The share of groups whose returns differ; warns when no group has differed for a while."""
        by_group: dict[int, set] = {}
        for e in episodes:
            by_group.setdefault(e.group, set()).add(round(e.total_reward, 6))
        informative = sum(len(v) > 1 for v in by_group.values()) / max(len(by_group), 1)
        if self.config.advantage == "ppo":  # turn-level credit learns from reward differences between turns too
            informative = max(informative, float(any(len({t.reward for t in e.turns}) > 1 for e in episodes)))
        empty = sum(not t.action.strip() for e in episodes for t in e.turns) / max(sum(len(e.turns) for e in episodes), 1)
        dead = informative == 0 or empty == 1
        self.steps_with_signal += not dead
        self.dead_steps = self.dead_steps + 1 if dead else 0
        if self.dead_steps >= self.config.no_signal_patience and not self.warned and self.accelerator.is_main_process:
            self.warned = True
            reason = "every reply is empty" if empty == 1 else (
                f"every episode of each group has the same return ({episodes[0].total_reward:.4g})")
            print(f"[tandem] warning: {self.dead_steps} steps in a row (to step {step + 1}) with nothing to learn from: "
                  f"{reason}. A sample episode:\n{episodes[0].transcript()[-1200:]}\n  Check the chat template "
                  "(--chat-template), --max-new-tokens, --temperature and the environment's instructions.", flush=True)
        return {"signal/informative_fraction": informative, "signal/empty_fraction": empty}

    def collect(self, step: int) -> dict:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        episodes = self._episodes(step, timings)
        t1 = time.perf_counter()
        rows = training_rows(episodes, self.config.history, self.tokenizer.pad_token_id).to(self.accelerator.device)
        single_pass = (self.optimizer_steps_per_step() == 1 and not self.config.kl_coef and not self.needs_values)
        old_logp, ref_logp, values = (None, None, None) if single_pass else self._old_forward(rows)
        advantages, adv_stats, value_targets = self._advantages(episodes, rows, values)
        steps_here = env_steps(episodes)
        self.real_env_steps += int(self._all_reduce_sum([steps_here])[0])
        stats = {**episode_metrics(episodes), **self._signal(episodes, step), **adv_stats,
                 "reward": sum(e.total_reward for e in episodes) / len(episodes), "env_steps": float(self.real_env_steps),
                 "rows": float(len(rows)), "sampled_tokens": float(rows.loss_mask.sum()),
                 "time/episodes": t1 - t0, **{f"time/{k}": v for k, v in timings.items()},
                 "time/advantages": time.perf_counter() - t1}
        if ref_logp is not None:
            mask = rows.loss_mask[:, 1:].bool()
            stats["kl"] = float(masked_mean(kl_estimate(self.config.kl_estimator, old_logp, ref_logp), mask))
        return {"episodes": episodes, "rows": rows, "old_logp": old_logp, "ref_logp": ref_logp,
                "advantages": advantages.to(self.accelerator.device), "value_targets": value_targets, "stats": stats}

    def _value_loss(self, values, rows_index: torch.Tensor, data: dict) -> tuple[torch.Tensor, dict]:
        """Clipped value loss at each turn's value position within this micro-batch, summed (one term per turn)."""
        targets = data["value_targets"]
        local = {int(r): k for k, r in enumerate(rows_index.tolist())}
        picked, old, returns = [], [], []
        for (e, t), (r, p) in targets["positions"].items():
            if r in local:
                picked.append(values[local[r], p])
                old.append(targets["old_values"][e, t])
                returns.append(targets["returns"][e, t])
        if not picked:
            return values.sum() * 0.0, {}
        v = torch.stack(picked).float()
        loss, clip_fraction = clipped_value_loss(v, torch.stack(old).to(v), torch.stack(returns).to(v),
                                                 torch.ones_like(v, dtype=torch.bool), self.config.value_clip)
        return loss.sum(), {"value_loss": float(loss.detach().mean()), "value_clip_fraction": float(clip_fraction)}

    def update(self, data: dict, step: int) -> dict[str, float]:
        cfg = self.config
        rows: TrainingRows = data["rows"]
        labels = self._labels(rows)
        mask = rows.loss_mask[:, 1:].bool()
        n = len(rows)
        n_turns = max(sum(len(e.turns) for e in data["episodes"]), 1)
        sums: dict[str, float] = {}
        count = 0
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + int(self.scheduler.last_epoch))
        sampled = rows.sampled_log_probs[:, 1:]
        mismatch, mismatch_tokens = 0.0, 0.0
        micro_rows = rows_within_memory(self.model, rows.input_ids.shape[1], cfg.micro_batch_size, cfg.micro_batch_memory)
        for epoch in range(cfg.update_epochs):
            order = torch.randperm(n, generator=generator)
            for minibatch in order.chunk(cfg.minibatches):
                normaliser = self._all_reduce_sum([float(global_normaliser(cfg.loss_agg, mask[minibatch], cfg.max_new_tokens))])[0]
                for rows_index in minibatch.split(micro_rows):
                    logits, values = self._forward(self.model, rows, rows_index, labels[rows_index])
                    logp, _ = token_log_probs(logits, labels[rows_index])
                    micro_mask = mask[rows_index]
                    if epoch == 0:  # sampler vs trainer: the same policy, two numerical paths (bf16 generate vs training forward)
                        gap = (logp.detach().float() - sampled[rows_index]).abs()
                        mismatch += float(torch.where(micro_mask, gap, 0.0).sum())
                        mismatch_tokens += float(micro_mask.sum())
                    old = logp.detach() if data["old_logp"] is None else data["old_logp"][rows_index]
                    out = policy_loss(cfg.policy_loss, logp, old, data["advantages"][rows_index], micro_mask)
                    per_token = out.loss
                    if cfg.kl_coef and data["ref_logp"] is not None:
                        per_token = per_token + cfg.kl_coef * kl_estimate(cfg.kl_estimator, logp, data["ref_logp"][rows_index])
                    if cfg.entropy_coef:
                        entropy = token_entropy(logits, micro_mask)
                        per_token = per_token - cfg.entropy_coef * entropy
                        sums["entropy"] = sums.get("entropy", 0.0) + float(masked_mean(entropy.detach(), micro_mask))
                    loss = aggregate_loss(per_token, micro_mask, cfg.loss_agg, normaliser)
                    if values is not None:
                        value_loss, value_stats = self._value_loss(values, rows_index, data)
                        loss = loss + cfg.vf_coef * value_loss / n_turns
                        for key, value in value_stats.items():
                            sums[key] = sums.get(key, 0.0) + value
                    self.accelerator.backward(loss * self.world)
                    for key, value in out.stats.items():
                        sums[key] = sums.get(key, 0.0) + float(value)
                    sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                    count += 1
                grad_norm = self._optimizer_step(step, lambda: f"episode seeds {[e.seed for e in data['episodes']][:8]}")
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
        steps = cfg.update_epochs * cfg.minibatches
        averaged = {k: v / (steps if k in ("loss", "grad_norm") else max(count, 1)) for k, v in sums.items()}
        # mean |log pi_train - log pi_sampled| over the sampled tokens (the rollout/training mismatch; 0 is ideal)
        averaged["logprob_mismatch"] = mismatch / max(mismatch_tokens, 1.0)
        return averaged

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, model) -> dict[str, float]:
        cfg = self.config
        if not cfg.n_eval:
            return {}
        if not self.eval_envs:
            self.eval_envs = [self.suite.make("eval") for _ in range(cfg.n_eval)]
        temperature = cfg.temperature if cfg.eval_temperature is None else cfg.eval_temperature
        sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=temperature,
                                  top_p=cfg.top_p, top_k=cfg.top_k)
        seeds = list(range(cfg.n_eval))
        episodes = []
        with torch.random.fork_rng(devices=[]):  # the same sampling noise at every evaluation; training's RNG untouched
            torch.manual_seed(cfg.seed + 99_991)
            for start in range(0, cfg.n_eval, 32):  # bounded batches
                chunk = seeds[start:start + 32]
                episodes += run_episodes(model, self.tokenizer, self.format, self.eval_envs[start:start + 32], chunk,
                                         chunk, sampling, self.options)
        metrics = {f"eval/{k}": v for k, v in episode_metrics(episodes).items()}
        step = int(self.scheduler.last_epoch) // max(self.optimizer_steps_per_step(), 1)
        metrics["eval/env_steps_trained"] = float(self.real_env_steps)
        self.evaluations.append({"step": step, **metrics})
        if cfg.transcripts:
            folder = self.out / "transcripts"
            folder.mkdir(parents=True, exist_ok=True)
            text = "\n".join(e.transcript() for e in episodes[:cfg.transcripts])
            atomic_write_text(folder / f"eval-step-{step:06d}.txt", text)
        return metrics

    def extra_state(self) -> dict:
        return {"env_steps": self.real_env_steps, "evaluations": self.evaluations}

    def load_extra_state(self, state: dict) -> None:
        self.real_env_steps = int(state.get("env_steps", 0))
        self.evaluations = list(state.get("evaluations", []))

    def train(self) -> TrainResult:
        cfg = self.config
        main = self.accelerator.is_main_process
        start_step, writer, bar, started = self._start()
        if start_step == 0 and cfg.eval_zero_shot:
            self._run_evaluation(0, writer)
        for step in range(start_step, self.total_steps):
            t0 = time.perf_counter()
            data = self.collect(step)
            t1 = time.perf_counter()
            stats = {**data["stats"], **self.update(data, step), "time/update": time.perf_counter() - t1,
                     "time/step": time.perf_counter() - t0}
            done = step + 1
            if main:
                bar.update(1)
                bar.set_postfix(success=f"{stats['success_rate']:.2f}", ret=f"{stats['return']:.2f}",
                                invalid=f"{stats['invalid_rate']:.2f}")
                if done % cfg.log_every == 0 or done == self.total_steps:
                    self._log({"step": done, "lr": self.scheduler.get_last_lr()[0],
                               **{f"train/{k}": v for k, v in stats.items()}}, writer)
            self._after_step(done, writer)
        bar.close()
        if main and not self.steps_with_signal and self.total_steps > start_step:
            print(f"[tandem] warning: none of the {self.total_steps - start_step} steps had anything to learn from "
                  "(every group's episodes had equal returns): the model is unchanged", flush=True)
        result = self._finish(writer, started)
        result.learned = self.total_steps == start_step or self.steps_with_signal > 0
        if main:
            self._report(result)
        return result

    def _report(self, result: TrainResult) -> None:
        first = self.evaluations[0] if self.evaluations else {}
        last = self.evaluations[-1] if self.evaluations else {}
        report = {"env": self.config.env, "steps": result.steps, "seconds": round(result.seconds, 1),
                  "env_steps": self.real_env_steps, "history": self.config.history, "advantage": self.config.advantage,
                  "before": first, "after": last, "evaluations": self.evaluations}
        atomic_write_text(self.out / "report.json", json.dumps(report, indent=2))
        plot_curves(self.out / "metrics.jsonl", self.out / "curves.png", self.config.env)


def plot_curves(metrics_file: Path, path: Path, title: str) -> None:
    """Success rate and return against RL steps (training episodes, and held-out evaluations)."""
    plt = headless_pyplot()

    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key in zip(axes, ("success_rate", "return")):
        train = [(r["step"], r[f"train/{key}"]) for r in records if f"train/{key}" in r]
        evals = [(r["step"], r[f"eval/{key}"]) for r in records if f"eval/{key}" in r]
        if train:
            ax.plot(*zip(*train), label="training episodes", alpha=0.7)
        if evals:
            ax.plot(*zip(*evals), "o-", label="held-out start states")
        ax.set_xlabel("RL step")
        ax.set_ylabel(key.replace("_", " "))
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def shaping_potential(config: AgentRLConfig):
    """Phi(observation) from --shaping-model: the model's expected progress rating, scaled (None when off)."""
    if config.shaping_model is None:
        return None
    from tandem.agents.backends import HFBackend
    from tandem.agents.render import goal_text

    backend = HFBackend(config.shaping_model)
    return lambda observation: config.shaping_scale * backend.rate_progress(observation, goal_text(observation) or config.env)


def run_agent_rl(config: AgentRLConfig) -> TrainResult:
    """Load the policy (and a reference when --kl-coef > 0), build the environment, train, report."""
    set_seed(config.seed)
    suite = make_env_suite(config.env, invalid=config.invalid_action, invalid_penalty=config.invalid_penalty)
    if str(config.model) == "tiny" and not Path("tiny").exists():
        from tandem.agentrl.warmstart import build_random_policy

        init = Path(config.out) / "init"
        if not (init / "config.json").exists():
            print(f"[tandem] --model tiny: a tiny model acting at random among valid actions, in {init}", flush=True)
            build_random_policy(suite, init, seed=config.seed)
        config.__dict__["model"] = init
    tokenizer = load_tokenizer(config.model)
    setup = prepare_run(config, tokenizer)
    policy = load_causal_lm(config.model)
    if config.lora_rank:
        policy = add_lora(policy, config.lora_rank, config.lora_alpha)
    if config.advantage == "ppo":
        from tandem.trainers.ppo import PolicyWithValueHead

        policy = PolicyWithValueHead(policy)
    reference = None
    if config.kl_coef and (config.ref_model is not None or not config.lora_rank):
        reference = load_causal_lm(config.ref_model or config.model)
    trainer = AgentRLTrainer(config, policy, tokenizer, suite, chat=setup.chat, reference=reference,
                             shaping=shaping_potential(config))
    return trainer.train()


def register(add_command) -> None:
    def show(config: AgentRLConfig):
        result = run_agent_rl(config)
        report = json.loads((Path(config.out) / "report.json").read_text())
        before, after = report.get("before", {}), report.get("after", {})
        if before and after:
            print(f"held-out success {before['eval/success_rate']:.3f} -> {after['eval/success_rate']:.3f}, "
                  f"invalid-action rate {before['eval/invalid_rate']:.3f} -> {after['eval/invalid_rate']:.3f} "
                  f"({report['env_steps']} env steps, {result.seconds:.0f}s); report in {config.out}/report.json")
        print(f"model saved to {result.model_dir}")
        return result

    add_command("agent-rl", AgentRLConfig, show,
                "Multi-turn RL of a language model acting in a text environment (Gymnasium, BabyAI, text games, "
                "tools, single-turn tasks): trajectory-level GRPO/RLOO or turn-level PPO; held-out success rate.")
