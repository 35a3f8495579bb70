"""Online RL for language models: rollout -> score -> advantages -> update, shared by PPO and GRPO.

Each training step takes the next `batch_size` prompts, samples `samples_per_prompt` completions for
each with the current policy, scores them (a task's gold reward, verifiers, a reward model or a user's
function, checked for errors and NaN), computes log-probabilities under the policy and the frozen
reference, turns rewards into advantages with an estimator chosen by name, and takes
`update_epochs x minibatches` optimizer steps with a policy loss chosen by name. PPO and GRPO differ
only in their configs and the two hooks `token_rewards` / `extra_losses` (see `ppo.py`, `grpo.py`).

On several processes a step is the same step as on one: each process rolls out its share of the
prompts (whole groups: every sample of a prompt stays on one process), draws are keyed by the row's
place in the global batch (so the completions are those one process would sample), batch statistics
(advantage whitening, the logged reward and KL, the KL the adaptive controller reads) are global sums,
and the update's minibatches are drawn from the global rows, each process training on its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from transformers import set_seed

from tandem.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS, NEEDS_VALUES, SCORE_ONLY, AdvantageInputs, compute_advantages, informative_groups, masked_mean,
    sequence_scores, token_rewards_from_scores,
)
from tandem.algorithms.importance import logprob_gap, truncated_importance_weights
from tandem.algorithms.kl import KL_ESTIMATORS, FixedKLController, AdaptiveKLController, kl_estimate
from tandem.algorithms.losses import IGNORE_INDEX, token_log_probs
from tandem.algorithms.policy_losses import (
    LOSS_AGGREGATIONS, POLICY_LOSS_FACTS, POLICY_LOSSES, aggregate_loss, token_entropy, global_normaliser, policy_loss,
)
from tandem.config import InputPath, TrainConfig, registered_name
from tandem.data import load_examples
from tandem.models.loading import add_lora, load_causal_lm, load_tokenizer, process_device, reference_and_context
from tandem.rewards import build_reward
from tandem.tasks import check_task_spec, get_task
from tandem.generation.engines import ENGINE_MEMORY_HELP, ROLLOUT_ENGINES, make_engine
from tandem.generation.prefill_graph import PrefillGraph, can_keep_prefill, prefill_logits, row_prompts
from tandem.generation.prefix import prompt_order
from tandem.generation.scoring import (
    activation_bytes_per_token, completion_logits, free_device_bytes, rows_within_memory, shared_prefix_plan,
)
from tandem.generation.rollout import RolloutBatch
from tandem.trainers.callbacks import fire, reads_kl as callbacks_read_kl
from tandem.trainers.distributed import EngineError
from tandem.trainers.loop import GenerativeTrainer, TrainResult, frozen_model_dtype, reference_dtype, resolve_precision
from tandem.trainers.rollout_kinds import PromptRollouts
from tandem.trainers.setup import RunSetup, prepare_run
from tandem.trainers.sft import LoRAOptions


# The options whose value names a registry entry: validated against it, and listed from it in --help.
REGISTRIES = {"advantage": ADVANTAGE_ESTIMATORS, "policy_loss": POLICY_LOSSES, "kl_estimator": KL_ESTIMATORS,
              "loss_agg": LOSS_AGGREGATIONS, "engine": ROLLOUT_ENGINES}


class RLOptions(TrainConfig, LoRAOptions):
    """Options of the one RL update, shared by every online RL command (prompts or environment episodes)."""

    registries: ClassVar[dict[str, dict]] = REGISTRIES

    model: Path = Field(Path("runs/sft/model"), description="Policy to start from (usually the SFT model): a model directory, a .gguf file or a LoRA adapter folder.")
    ref_model: InputPath | None = Field(None, description="Frozen reference for the KL term (default: --model; with --lora-rank: the policy with its adapters off, no second copy).")
    batch_size: int = Field(16, ge=1, description="Prompts (start states) per rollout step.")
    micro_batch_size: int = Field(16, ge=1, description="Sequences per forward pass in the update.")
    micro_batch_memory: float | None = Field(4.0, gt=0, description="GB of activations one update micro-batch may keep for its backward, estimated from the model's depth and width (about 1.9 MB per token for SmolLM2-135M under bf16 autocast, 1.3x that in fp32; tokens every row shares counted once): long completions of a large model take fewer rows than --micro-batch-size, the result the same (none: always --micro-batch-size; on a GPU, unless given: 0.8 of the device memory free at the update).")
    max_new_tokens: int | None = Field(None, ge=1, description="Longest completion (default: the task's).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0: off).")
    engine: str = Field("hf", description="Rollout engine: hf (Hugging Face generate on the training model), vllm (an in-process vLLM engine, weights pushed after each update; pip install 'tandem[vllm]').")
    engine_memory: float | None = Field(None, gt=0, lt=1, description=ENGINE_MEMORY_HELP)
    tis_cap: float | None = Field(None, gt=0, description="Truncated importance sampling (Yao et al. 2025): weight each token's policy-gradient term by min(pi_old / pi_engine, C) for the engine/trainer mismatch (verl and TRL use C = 2; default: off).")
    update_epochs: int = Field(1, ge=1, description="Passes over each rollout batch.")
    minibatches: int = Field(1, ge=1, description="Optimizer steps per pass over a rollout batch.")
    advantage: str = Field("grpo", description="Advantage estimator.")
    policy_loss: str = Field("ppo_clip", description="Policy loss.")
    clip_low: float = Field(0.2, gt=0, description="Clip epsilon below 1 (default: the loss's own, 0.2 for ppo_clip, 3e-4 for gspo).")
    dual_clip: float | None = Field(None, gt=1, description="Dual-clip PPO constant c > 1 (Ye et al. 2020): bounds the loss of negative-advantage tokens at -c A (ppo_clip only; default: off).")
    clip_high: float | None = Field(None, description="PPO clip epsilon above 1 (DAPO clip-higher: 0.28; default: --clip-low).")
    loss_agg: str = Field("token-mean", description="Loss aggregation.")
    kl_estimator: str = Field("k3", description="KL estimator.")
    kl_coef: float = Field(0.05, ge=0, description="beta in r - beta KL: weight of the KL to the reference.")
    target_kl: float | None = Field(None, gt=0, description="Adaptive KL controller target (Ziegler et al. 2019); none: fixed --kl-coef.")
    kl_horizon: float = Field(10_000, gt=0, description="Adaptive KL controller horizon in samples.")
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus weight.")
    kl_metrics: bool | None = Field(None, description="Measure the KL to the reference every step even when nothing needs it (default: only when the KL is in the loss or reward, or a reward-hacking monitor reads it). Without it, --kl-coef 0, one update per rollout and a group advantage skip the reference and old-policy forwards (as TRL does with beta=0), and no reference model is loaded unless evaluation measures KL.")
    no_signal_patience: int = Field(3, ge=1, description="Warn (with a sample) after this many steps in a row with nothing to learn from: every reward equal, or every completion empty or cut at --max-new-tokens.")
    lr: float = Field(1e-5, gt=0, description="Peak learning rate of AdamW (pretrained models: 1e-6, TRL's default).")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Fraction of optimizer steps with linear warm-up.")
    schedule: Literal["cosine", "linear", "constant"] = Field("constant", description="Learning-rate decay after warm-up.")
    max_steps: int | None = Field(50, ge=1, description="Rollout steps to run.")
    eval_zero_shot: bool = Field(False, description="Evaluate before the first update too (the starting policy's figures in metrics.jsonl).")

    @field_validator("advantage", "policy_loss", "kl_estimator", "loss_agg", "engine")
    @classmethod
    def _registered(cls, value: str, info) -> str:
        """A typo in a registered name fails here, before any model loads, with the names to choose from."""
        return registered_name(value, cls.registries[info.field_name], info.field_name.replace("_", " "))

    def micro_batch_cap(self) -> int | None:
        """None: the update's micro-batches count rows (samples, episode turns), not --batch-size's prompts or
        start states (capping them at --batch-size cut agent RL's update to 2-row micro-batches)."""
        return None


class OnlineRLConfig(RLOptions):
    """Options every online RL command on prompts shares (the rollout: prompts, samples, reward)."""

    task: str = Field("sentiment", description="Built-in task for prompts (and its gold reward for evaluation).")
    data: InputPath | None = Field(None, description="Your prompts: a file with a 'prompt' field; other fields reach the reward as columns.")
    reward: str = Field("task", description="Reward: 'task' (the task's gold reward), verifier:NAME, task:NAME, model:PATH, module:function; weighted sums as '0.5*A,1.0*B'.")
    reward_timeout: float | None = Field(300.0, gt=0, description="Seconds a reward call (one batch) may take; a slower one is a reward error, as an exception is (none: no limit).")
    reward_bound: float = Field(1e6, gt=0, description="A reward of larger magnitude is an error, as NaN is (it would make the weights NaN).")
    reward_errors: Literal["raise", "skip"] = Field("raise", description="A reward that raises or returns NaN/inf: stop the run (raise) or leave that sample out (skip).")
    n_prompts: int = Field(2000, ge=1, description="Training prompts to draw from the task.")
    n_eval: int = Field(200, ge=0, description="Held-out prompts for gold reward and KL evaluation.")
    samples_per_prompt: int = Field(1, ge=1, description="Completions sampled per prompt (the group size of GRPO/RLOO).")
    stop_strings: list[str] = Field(default_factory=list, description="Strings that end a completion besides EOS.")
    dynamic_sampling: bool = Field(False, description="DAPO dynamic sampling: drop prompt groups whose rewards are all equal (no advantage) and sample more prompts to refill the batch.")
    max_sampling_rounds: int = Field(4, ge=1, description="Dynamic sampling: most rollouts per step; a batch still short afterwards is topped up with dropped groups.")
    on_long_prompt: Literal["error", "truncate", "skip"] = Field(
        "skip", description="A prompt longer than --max-prompt-length: leave it out and count it (skip), keep its last tokens (truncate), or stop (error)."
    )

    # TRL's GRPO defaults for a pretrained checkpoint (learning rate; room for a chat model's answer)
    pretrained_defaults = {"lr": 1e-6, "max_new_tokens": 256}

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        return check_task_spec(value)

    def micro_batch_cap(self) -> int | None:
        """Micro-batches count sequences: prompts x samples."""
        return self.batch_size * self.samples_per_prompt

    @model_validator(mode="after")
    def _groups_for_dynamic_sampling(self) -> OnlineRLConfig:
        if self.dynamic_sampling and self.samples_per_prompt < 2:
            raise ValueError("dynamic sampling compares the rewards within a group: set --samples-per-prompt >= 2")
        return self


# A prompt is all RL needs; records of the richer formats are accepted and their prompt used.
PROMPT_FORMATS = {"prompt_only", "prompt_completion", "preference", "unpaired"}


def reads_kl(config: OnlineRLConfig, callbacks=()) -> bool:
    """Whether anything needs the KL to the reference: the loss or reward (beta > 0, adaptive), or a callback
    (the reward-hacking monitor)."""
    return callbacks_read_kl(callbacks) or config.kl_coef > 0 or config.target_kl is not None


def place_scores(scores: torch.Tensor, mask: torch.Tensor, batch: RolloutBatch) -> torch.Tensor:
    """Token rewards (N, L-1) from row scores: each score on its row's last token; for multi-turn rows
    (`batch.step_rewards`) each turn's reward where it was earned, and whatever a trainer changed in the score
    (a length penalty, say) on the last token."""
    rewards = token_rewards_from_scores(scores, mask)
    if batch.step_rewards is None:
        return rewards
    earned = torch.where(mask, batch.step_rewards[:, 1:].to(rewards.dtype), 0.0)
    return rewards + earned - token_rewards_from_scores(earned.sum(-1), mask)


def rollout_stats(batch: RolloutBatch, mask: torch.Tensor) -> dict[str, float]:
    return {"response_length": float(mask.sum(-1).float().mean()), "ended_fraction": float(batch.ended.float().mean())}


def learning_signal(batch: RolloutBatch, scores: torch.Tensor, valid: torch.Tensor, grouped: bool) -> dict[str, float]:
    """What a step can learn from: the share of groups whose rewards differ (or whether any two rewards differ
    without groups), and the shares of empty and of cut-off completions."""
    if grouped:
        informative = float(informative_groups(scores, batch.group_ids, valid).float().mean())
    else:
        kept = scores[valid]
        informative = float(kept.numel() > 1 and bool((kept != kept[0]).any()))
    empty = sum(not c.strip() for c in batch.completions) / max(len(batch.completions), 1)
    return {"signal/informative_fraction": informative, "signal/empty_fraction": empty,
            "signal/truncated_fraction": 1.0 - float(batch.ended.float().mean())}


class NoSignalWatch:
    """Say so when RL cannot learn, instead of finishing quietly with an unchanged model.

    A step has nothing to learn from when every reward is equal (no advantage: GRPO's groups are all
    ties) or every completion is empty; `steps_with_signal` counts the others, and a run with none of
    them exits 1 from the CLI. After `patience` such steps in a row, or steps whose every completion
    was cut at the length limit, it warns once, with a sample and what to check.
    """

    def __init__(self, patience: int):
        self.patience, self.run, self.warned, self.steps_with_signal, self.steps = patience, 0, False, 0, 0

    def update(self, step: int, signal: dict[str, float], batch: RolloutBatch, scores: torch.Tensor) -> str | None:
        self.steps += 1
        # no gradient at all: every advantage zero, or nothing generated; every completion cut at the limit
        # still teaches (rewards can differ) but is worth a warning
        no_gradient = signal["signal/informative_fraction"] == 0 or signal["signal/empty_fraction"] == 1
        self.steps_with_signal += not no_gradient
        self.run = self.run + 1 if no_gradient or signal["signal/truncated_fraction"] == 1 else 0
        if self.run < self.patience or self.warned:
            return None
        self.warned = True
        reasons = []
        if signal["signal/informative_fraction"] == 0:
            reasons.append(f"every reward is equal ({float(scores[0]):.4g}): no advantage, no gradient")
        if signal["signal/empty_fraction"] == 1:
            reasons.append("every completion is empty")
        if signal["signal/truncated_fraction"] == 1:
            reasons.append("every completion was cut at --max-new-tokens")
        return (f"[tandem] warning: {self.run} steps in a row (to step {step + 1}) with nothing to learn from: "
                f"{'; '.join(reasons)}.\n  prompt: {batch.prompts[0][-300:]!r}\n  completion: {batch.completions[0][:300]!r}"
                "\n  Check the chat template (--chat-template), --max-new-tokens, and the reward on a few completions.")


@dataclass
class Rollout:
    """One step's collected rollout, what the update trains on (`collect` -> `update`)."""

    batch: RolloutBatch
    mask: torch.Tensor                     # (N, L-1) tokens that carry loss, aligned with the shifted log-probs
    advantages: torch.Tensor               # (N, L-1)
    returns: torch.Tensor                  # (N, L-1) value targets (critic estimators)
    old_logp: torch.Tensor | None = None   # log pi_old; None: read from the update's own forward (single pass)
    ref_logp: torch.Tensor | None = None
    values: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)
    prefill: PrefillGraph | None = None    # the rollout's prompt forward, kept for the update (--prefill-memory)


def per_sample_advantages(name: str, inputs: AdvantageInputs, sample_ids: torch.Tensor, **options) -> torch.Tensor:
    """A score-only estimator over samples that span several rows (an episode of one row per turn): each sample
    counts once in its group, scored by the sum of its rows' scores, and its advantage reaches every token of its rows."""
    samples, row_sample = torch.unique(sample_ids, return_inverse=True)
    first = torch.full((len(samples),), len(sample_ids), device=sample_ids.device)
    first = first.scatter_reduce(0, row_sample, torch.arange(len(sample_ids), device=sample_ids.device), "amin")
    row_scores = sequence_scores(inputs.rewards, inputs.mask)
    scores = torch.zeros(len(samples), dtype=row_scores.dtype, device=row_scores.device)
    scores = scores.index_add(0, row_sample, row_scores).unsqueeze(-1)
    ones = torch.ones_like(scores, dtype=torch.bool)
    one_token = AdvantageInputs(rewards=scores, mask=ones, group_ids=inputs.group_ids[first], reduce=inputs.reduce)
    advantages, _ = compute_advantages(name, one_token, **options)
    return torch.where(inputs.mask.bool(), advantages[row_sample], 0.0)


def bootstrap_from_next_row(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, next_row: torch.Tensor,
                            gamma: float) -> torch.Tensor:
    """Rows that continue in another row (one row per turn) get gamma V(next turn's first state) on their last token,
    so GAE within each row is bootstrapped across turns (GAE truncated at turn boundaries)."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    first = torch.where(mask, positions, mask.shape[-1]).amin(-1).clamp(max=mask.shape[-1] - 1)
    last = torch.where(mask, positions, -1).amax(-1)
    rows = ((next_row >= 0) & (last >= 0)).nonzero().flatten()
    following = next_row[rows]
    rewards = rewards.clone()
    rewards[rows, last[rows]] += gamma * values[following, first[following]].to(rewards.dtype)
    return rewards


def trainable_parameters(model) -> int:
    """What the first update allocates beside the weights is 12 bytes per trainable parameter: its fp32 gradient and
    AdamW's two moments (a vLLM engine started before it leaves room for them)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class OnlineTrainer(GenerativeTrainer):
    """The RL loop; subclasses say how scores become token rewards and which extra loss terms apply, the rollout
    kind (`tandem.trainers.rollout_kinds`) what each step samples: prompts' completions or environment episodes."""

    name = "rl"
    needs_values = False  # PPO: a value head read at rollout time

    def __init__(self, config: RLOptions, model, tokenizer, prompts: list, reference, reward=None, task=None,
                 eval_prompts=(), max_new_tokens: int = 48, monitor=None, eval_max_new_tokens: int | None = None,
                 callbacks=(), rollouts=None):
        if NEEDS_VALUES[config.advantage] and not self.needs_values:  # before the model is wrapped or anything rolls out
            raise ValueError(f"advantage estimator {config.advantage!r} needs critic values, which {type(self).__name__} "
                             "has not (no value head): use tandem ppo, or a group advantage (grpo, rloo, ...)")
        # `monitor`: a RewardHackingMonitor, one callback among the others (fed proxy, gold and KL every step)
        super().__init__(config, model, tokenizer, prompts, (), task=task, eval_prompts=eval_prompts,
                         eval_max_new_tokens=eval_max_new_tokens, callbacks=[*callbacks, *([monitor] if monitor is not None else [])])
        self.reference = reference.to(self.accelerator.device).eval().requires_grad_(False) if reference is not None else None
        self.reward, self.max_new_tokens = reward, max_new_tokens  # the reward of prompt rollouts (None for episodes)
        controller = AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon) if config.target_kl else None
        self.kl_controller = controller or FixedKLController(config.kl_coef)
        self.signal_watch = NoSignalWatch(config.no_signal_patience)
        # a separate reference, or LoRA's base with the adapters off: without either there is no KL to report
        if self.zero_stage is not None:
            raise EngineError("RL commands do not run under DeepSpeed yet (the update steps the optimizer itself): "
                              "use FSDP2 (configs/accelerate/fsdp2.yaml) or DDP")
        policy = self.accelerator.unwrap_model(self.model)
        self.has_reference = reference_and_context(policy, self.reference)[0] is not None
        if config.engine != "hf" and self.world > 1:
            raise EngineError(f"--engine {config.engine} runs in one process for now: launch one process, or use --engine hf")
        # created once per run; an engine with its own copy of the weights gets them after each update (`sync`)
        dtype = {"bf16": "bfloat16", "fp16": "float16", "no": "float32"}[resolve_precision(config.mixed_precision)]
        longest = max(max_new_tokens, eval_max_new_tokens or getattr(task, "max_new_tokens", 0))  # evaluation uses it too
        self.engine = make_engine(config.engine, policy, tokenizer, autocast=self.accelerator.autocast, dtype=dtype,
                                  seed=config.seed, max_model_len=config.max_length + longest,
                                  memory=config.engine_memory, reserve_bytes=12 * trainable_parameters(policy))
        self.rollouts = rollouts(self) if rollouts is not None else PromptRollouts(self, reward, max_new_tokens)

    def optimizer_steps_per_step(self) -> int:
        return self.config.update_epochs * self.config.minibatches

    def _accumulation_steps(self) -> int:
        """Each process rolls out batch_size / processes prompts; the update splits rows into micro-batches itself."""
        if self.config.batch_size % self.world:
            raise ValueError(f"batch_size {self.config.batch_size} must be a multiple of the {self.world} processes")
        return 1

    @property
    def kl_metrics(self) -> bool:
        """--kl-metrics, or by default whether anything reads the KL (the loss or reward, the monitor)."""
        return self.config.kl_metrics if self.config.kl_metrics is not None else reads_kl(self.config, self.callbacks)

    @property
    def single_pass(self) -> bool:
        """True when no forward pass is needed between rollout and update (see --kl-metrics)."""
        cfg = self.config
        return (not self.kl_metrics and self.kl_controller.value == 0 and cfg.target_kl is None
                and self.optimizer_steps_per_step() == 1 and SCORE_ONLY[cfg.advantage]
                and not self.needs_values)

    @property
    def skips_idle_rows(self) -> bool:
        """Whether the update leaves out rows whose advantage is 0 on every token: every registered policy loss
        is linear in the advantage, so such a row's loss and gradient are exactly 0, unless an entropy bonus, a
        KL term in the loss or a value loss adds to it. A group whose samples all scored alike (the "echo trap"
        of multi-turn RL, an RLVR prompt every sample solves) then costs no forward or backward pass."""
        return not self.config.entropy_coef and self.kl_controller.value == 0 and not self.needs_values

    def prefill_graph(self) -> PrefillGraph | None:
        """A `PrefillGraph` for the rollout about to start when the update can take its prompts' forward from it
        (agent-rl's --prefill-memory): one optimizer step on the sampling weights (the single pass), `generate` on the
        trained model (not an engine's copy of it), one process (DDP reduces gradients in the last micro-batch's
        backward, before the kept prefill's), no fp16 loss scaling, and a model the shared-prefix forward runs
        on without dropout (`can_keep_prefill`). None otherwise."""
        cfg = self.config
        memory = getattr(cfg, "prefill_memory", 0.0)  # agent-rl's option
        if (not memory or not self.single_pass or self.world > 1 or self.engine.owns_weights
                or self.accelerator.mixed_precision == "fp16"):
            return None
        model = self.accelerator.unwrap_model(self.model)
        full_precision = self.accelerator.mixed_precision == "no" and next(model.parameters()).dtype == torch.float32
        per_token = activation_bytes_per_token(model, full_precision)
        if per_token is None or not can_keep_prefill(model):
            return None
        return PrefillGraph(most_tokens=int(memory * 2**30 // per_token))

    def _kept_prefill(self, data: Rollout, labels: torch.Tensor) -> PrefillGraph | None:
        """The rollout's kept prefill when it holds every row's prompt (else it is let go: the update recomputes)."""
        if data.prefill is None:
            return None
        prompts = row_prompts(data.batch.input_ids, data.batch.attention_mask, labels)
        if prompts is None or not data.prefill.covers(prompts):
            data.prefill.release()
            return None
        return data.prefill

    def extra_state(self) -> dict:
        return {"kl_coef": self.kl_controller.value, **self.rollouts.state()}

    def load_extra_state(self, state: dict) -> None:
        if "kl_coef" in state:  # the adaptive controller's beta continues where it stopped
            self.kl_controller.value = float(state["kl_coef"])
        self.rollouts.load_state(state)

    # ---- hooks -------------------------------------------------------------------------------
    @staticmethod
    def prepare_model(model):
        """The trainable model built from the loaded policy (PPO adds a value head)."""
        return model

    def policy_forward(self, model, input_ids, attention_mask, labels):
        """Logits at the positions that score `labels` (and values everywhere, for models with a value head); rows
        sharing prompt tokens (a group's samples, an agent's instructions) compute them once (`completion_logits`)."""
        return completion_logits(model, labels, input_ids=input_ids, attention_mask=attention_mask), None

    def token_rewards(self, scores, mask, old_logp, ref_logp, batch) -> tuple[torch.Tensor, dict]:
        """Token-level rewards for the advantage estimator; default: the score on the last token."""
        return place_scores(scores, mask, batch), {}

    def extra_losses(self, logits, logp, values, data: Rollout, rows: torch.Tensor, mask) -> tuple[torch.Tensor, dict]:
        """Per-token loss terms added to the policy loss (KL to reference, entropy bonus, value loss).

        `data` is the step's collected rollout (full batch); `rows` selects this micro-batch.
        """
        per_token = torch.zeros_like(logp)
        stats = {}
        if self.config.entropy_coef:
            entropy = token_entropy(logits, mask)
            per_token = per_token - self.config.entropy_coef * entropy
            stats["entropy"] = masked_mean(entropy.detach(), mask)
        return per_token, stats

    def advantage_options(self) -> dict:
        return {}

    # ---- the RL step -----------------------------------------------------------------------
    def _labels(self, batch: RolloutBatch) -> torch.Tensor:
        return batch.input_ids.masked_fill(batch.completion_mask == 0, IGNORE_INDEX)

    def _sampler_forward(self, model, batch: RolloutBatch, rows, labels, prefill: PrefillGraph | None = None):
        """Logits of the policy that sampled (divided by the sampling temperature, as TRL and verl) and values;
        the logits only at the positions that score the completion, the values everywhere. `prefill`: the
        rollout's kept prompt forward, each row's suffix computed over it (no values: the single pass has none)."""
        if prefill is not None:
            logits = prefill_logits(model, prefill, labels, batch.input_ids[rows], batch.attention_mask[rows])
            return logits / self.config.temperature, None
        logits, values = self.policy_forward(model, batch.input_ids[rows], batch.attention_mask[rows], labels)
        return logits / self.config.temperature, values

    def _tokens_per_row(self, model, batch: RolloutBatch, labels: torch.Tensor) -> tuple[int, int]:
        """The tokens a row's forward computes, and those a micro-batch computes once whatever its rows (what
        --micro-batch-memory budgets): the batch's width and 0, or with the shared-prefix forward a row's share of
        the distinct tokens and the common ones."""
        if self.needs_values:  # the value head's forward is the plain one
            return batch.input_ids.shape[1], 0
        plan = shared_prefix_plan(model, labels, batch.input_ids, batch.attention_mask)
        if plan is None:
            return batch.input_ids.shape[1], 0
        return -(-(plan.cost() - len(plan.common)) // len(labels)), len(plan.common)

    def _micro_batch_rows(self, model, batch: RolloutBatch, labels: torch.Tensor) -> int:
        """--micro-batch-size, fewer where long rows would pass the budget: --micro-batch-memory, or on a GPU (unless
        it is given) the device memory free now."""
        cfg = self.config
        free = None if "micro_batch_memory" in cfg.model_fields_set else free_device_bytes(self.accelerator.device)
        per_row, shared = self._tokens_per_row(model, batch, labels)
        full_precision = self.accelerator.mixed_precision == "no" and next(model.parameters()).dtype == torch.float32
        return rows_within_memory(model, per_row, cfg.micro_batch_size, cfg.micro_batch_memory, free, shared=shared,
                                  full_precision=full_precision)

    @torch.no_grad()
    def _old_and_reference(self, batch: RolloutBatch):
        """log pi_old (recomputed by the training forward, so the ratio starts at exactly 1), log pi_ref, values."""
        labels = self._labels(batch)
        old, ref, values = [], [], []
        model = self.accelerator.unwrap_model(self.model)
        reference, reference_context = reference_and_context(model, self.reference)
        step = self._micro_batch_rows(model, batch, labels)
        for start in range(0, labels.shape[0], step):
            rows = slice(start, start + step)
            with self.accelerator.autocast():
                logits, value = self._sampler_forward(model, batch, rows, labels[rows])
                old.append(token_log_probs(logits, labels[rows])[0].float())
                values.append(value[:, :-1].float() if value is not None else None)
                if reference is not None:
                    with reference_context():
                        ref_logits = completion_logits(reference, labels[rows], input_ids=batch.input_ids[rows],
                                                       attention_mask=batch.attention_mask[rows]) / self.config.temperature
                    ref.append(token_log_probs(ref_logits, labels[rows])[0].float())
        old_logp = torch.cat(old)
        ref_logp = torch.cat(ref) if ref else old_logp.clone()
        values = torch.cat(values) if values[0] is not None else None
        return old_logp, ref_logp, values

    def _advantages(self, rewards, mask, values, batch: RolloutBatch, kl) -> tuple[torch.Tensor, torch.Tensor]:
        """The registered estimator; samples spanning several rows (episodes of one row per turn) are scored once
        each by a score-only estimator, and bootstrapped across rows by a critic one."""
        name = self.config.advantage
        inputs = AdvantageInputs(rewards=rewards, mask=mask, values=values, group_ids=batch.group_ids, kl=kl,
                                 reduce=self._sum_over_processes if self.world > 1 else None)
        if batch.sample_ids is not None and SCORE_ONLY[name]:
            advantages = per_sample_advantages(name, inputs, batch.sample_ids, **self.advantage_options())
            return advantages, advantages
        if batch.next_row is not None and values is not None:
            inputs.rewards = bootstrap_from_next_row(rewards, values, mask, batch.next_row, self.config.gamma)
        return compute_advantages(name, inputs, **self.advantage_options())

    def collect(self, step: int) -> Rollout:
        """Rollout -> score -> log-probs -> advantages for one step."""
        times: dict[str, float] = {}
        sampled = self.rollouts.sample(step, times)
        batch, scores, valid = sampled.batch, sampled.scores, sampled.valid
        t0 = time.perf_counter()
        mask = (self._labels(batch)[:, 1:] != IGNORE_INDEX) & valid.unsqueeze(-1)
        stats = {"reward": self._global_mean(scores, valid)}
        if self.single_pass:
            # nothing needs log pi_old before the update: the update's own forward gives it (ratio 1)
            old_logp = ref_logp = values = kl = None
            rewards, reward_terms = self.token_rewards(scores, mask, None, None, batch)
        else:
            old_logp, ref_logp, values = self._old_and_reference(batch)
            rewards, reward_terms = self.token_rewards(scores, mask, old_logp, ref_logp, batch)
            kl = kl_estimate(self.config.kl_estimator, old_logp, ref_logp)
            stats["logprob_mismatch"] = self._mean_gap(old_logp, batch, mask)
            if self.has_reference:
                stats["kl"] = self._global_mean((kl * mask).sum(-1), valid, empty=0.0)
        advantages, returns = self._advantages(rewards, mask, values, batch, kl)
        times["time/logprobs_advantages"] = time.perf_counter() - t0
        # the whole batch's signal (shares averaged over processes), so every process judges alike
        grouped = self.rollouts.group_size > 1 and SCORE_ONLY[self.config.advantage]
        signal = self._mean_over_processes(learning_signal(batch, scores, valid, grouped=grouped))
        warning = self.signal_watch.update(step, signal, batch, scores)
        if warning and self.accelerator.is_main_process:
            print(warning, flush=True)
        stats.update({"kl_coef": float(self.kl_controller.value), **rollout_stats(batch, mask), **sampled.stats,
                      **reward_terms, **signal, **times})
        stats.update(fire(self.callbacks, "on_rollout", self, step, batch, stats))
        return Rollout(batch, mask, advantages, returns, old_logp, ref_logp, values, stats, prefill=sampled.prefill)

    def update(self, data: Rollout, step: int = 0) -> dict[str, float]:
        """update_epochs x minibatches optimizer steps over one rollout batch (`step`: the RL step, for errors)."""
        cfg = self.config
        batch, mask = data.batch, data.mask
        labels = self._labels(batch)
        n = labels.shape[0]
        sums: dict[str, float] = {}
        count = 0
        options = self._policy_options()
        sampled = batch.sampled_log_probs[:, 1:]
        gap = [0.0, 0.0]  # single pass: the engine/trainer mismatch, read from the update's own forward
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + int(self.scheduler.last_epoch))
        # rows per micro-batch: --micro-batch-size, fewer when long sequences would exceed --micro-batch-memory
        rows = self._micro_batch_rows(self.forward_model, batch, labels)
        prefill = self._kept_prefill(data, labels)
        live = ((data.advantages != 0) & mask).any(-1).cpu() if self.skips_idle_rows else torch.ones(n, dtype=torch.bool)
        # the shared-prefix forward computes each distinct prompt once per micro-batch (the value head's plain one does not)
        place = torch.arange(n) if self.needs_values else prompt_order(batch.input_ids, batch.attention_mask, labels)
        for _ in range(cfg.update_epochs):
            # minibatches of the global rows (every process holds n of them), each process training on its own
            order = torch.randperm(n * self.world, generator=generator)
            for global_rows in order.chunk(cfg.minibatches):
                # in prompt order within the minibatch: rows sharing a prompt meet in one micro-batch (shared-prefix forward)
                minibatch = global_rows[(global_rows // n) == self.rank] - self.rank * n
                minibatch = minibatch[place[minibatch].argsort()]
                normaliser = global_normaliser(cfg.loss_agg, mask[minibatch], self.max_new_tokens)
                normaliser = self._all_reduce_sum([float(normaliser)])[0]
                minibatch = minibatch[live[minibatch]]  # after the normaliser: idle rows still count in the mean

                def loss_of(rows):
                    nonlocal gap
                    weight = 1.0 if len(rows) else 0.0  # an empty share: one row's forward, times 0, for the collectives
                    rows = rows if len(rows) else torch.zeros(1, dtype=torch.long)
                    rows = rows.to(labels.device)
                    logits, values = self._sampler_forward(self.forward_model, batch, rows, labels[rows], prefill)
                    logp, _ = token_log_probs(logits, labels[rows])
                    micro_mask = mask[rows]
                    old_logp = logp.detach() if data.old_logp is None else data.old_logp[rows]
                    if data.old_logp is None:
                        gap = [a + b for a, b in zip(gap, logprob_gap(old_logp, sampled[rows], micro_mask))]
                    out = policy_loss(cfg.policy_loss, logp, old_logp, data.advantages[rows], micro_mask, **options)
                    if cfg.tis_cap is not None:  # the tokens came from the engine's pi, not pi_old
                        weights = truncated_importance_weights(old_logp, sampled[rows], cfg.tis_cap)
                        out.loss = out.loss * weights
                        out.stats["tis_weight"] = masked_mean(weights, micro_mask)
                    extra, extra_stats = self.extra_losses(logits, logp, values, data, rows, micro_mask)
                    loss = aggregate_loss(out.loss + extra, micro_mask, cfg.loss_agg, normaliser)
                    return loss * (self.world * weight), ({**out.stats, **extra_stats}, loss.detach(), weight)

                micro_batches = self._same_count_everywhere(list(minibatch.split(rows)))
                for micro_stats, loss, weight in self._accumulate(micro_batches, loss_of):
                    # summed as tensors where they are tensors: one host sync per statistic per update, not per micro-batch
                    for key, value in {**micro_stats, "loss": loss}.items():
                        sums[key] = sums.get(key, 0.0) + (value.detach() if torch.is_tensor(value) else value)
                    count += weight > 0
                if prefill is not None:  # the prompts' share of the gradient, through the rollout's prefill
                    prefill.backward()
                grad_norm = self._optimizer_step(step, lambda: f"prompt {batch.prompts[0][-200:]!r}")
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
        steps = cfg.update_epochs * cfg.minibatches
        averaged = {k: float(v) / (steps if k in ("loss", "grad_norm") else max(count, 1)) for k, v in sums.items()}
        if data.old_logp is None:
            total, tokens = self._all_reduce_sum(gap)
            averaged["logprob_mismatch"] = total / max(tokens, 1.0)
        averaged["micro_batch_rows"] = float(rows)
        averaged["prefill_reused"] = float(prefill is not None)
        averaged["trained_row_fraction"] = float(live.float().mean())
        return averaged

    def _mean_gap(self, train_logp: torch.Tensor, batch: RolloutBatch, mask: torch.Tensor) -> float:
        """Mean |log pi_train - log pi_engine| over every process's sampled tokens (0 is ideal)."""
        total, tokens = self._all_reduce_sum(list(logprob_gap(train_logp, batch.sampled_log_probs[:, 1:], mask)))
        return total / max(tokens, 1.0)

    def _same_count_everywhere(self, micro_batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """Pad with empty micro-batches to the most any process has: every process runs as many forward and
        backward passes (DDP's and FSDP's collectives), and one with no row of a minibatch still joins."""
        most = len(micro_batches)
        if self.world > 1:
            most = int(self._all_reduce_max(most))
        return micro_batches + [torch.zeros(0, dtype=torch.long)] * (max(most, 1) - len(micro_batches))

    def _all_reduce_max(self, value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64, device=self.accelerator.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return float(tensor)

    def _sum_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        """The `reduce` of the advantage estimators: a tensor summed over processes."""
        if self.world == 1:
            return tensor
        total = tensor.detach().to(self.accelerator.device, torch.float64).clone()
        torch.distributed.all_reduce(total)
        return total.to(tensor.device, tensor.dtype)

    def _global_mean(self, values: torch.Tensor, valid: torch.Tensor, empty: float = float("nan")) -> float:
        """Mean of the valid rows of every process's share."""
        total, count = self._all_reduce_sum([float(values[valid].sum()), float(valid.sum())])
        return total / count if count else empty

    def _mean_over_processes(self, stats: dict[str, float]) -> dict[str, float]:
        """Logged statistics averaged over processes (equal shares); reward and KL are already global."""
        if self.world == 1:
            return stats
        keys = sorted(k for k in stats if k not in ("reward", "kl"))
        means = self._all_reduce_sum([stats[k] for k in keys])
        return {**stats, **{k: v / self.world for k, v in zip(keys, means)}}

    def _policy_options(self) -> dict:
        """The options the loss declares (its registry entry), those given: --clip-low, --clip-high (a given --clip-low
        brings --clip-high, whose default is it), --dual-clip; the rest keep the loss's own defaults (ppo_clip 0.2,
        gspo the paper's 3e-4 / 4e-4)."""
        declared = POLICY_LOSS_FACTS[self.config.policy_loss]["options"]
        given = set(self.config.model_fields_set) | ({"clip_high"} if "clip_low" in self.config.model_fields_set else set())
        return {key: getattr(self.config, key) for key in declared if key in given}

    def evaluate(self, model) -> dict[str, float]:
        return self.rollouts.evaluate(model)

    def train(self) -> TrainResult:
        cfg = self.config
        main = self.accelerator.is_main_process
        start_step, writer, bar, started = self._start()
        if start_step:  # resumed: the engine started from the weights before the checkpoint was loaded
            self.engine.sync(self.accelerator.unwrap_model(self.model))
        elif cfg.eval_zero_shot:
            self._run_evaluation(0, writer)
        for step in range(start_step, self.total_steps):
            t0 = time.perf_counter()
            data = self.collect(step)
            t1 = time.perf_counter()
            self.engine.sleep()  # the update takes the engine's memory; `sync` wakes it with the new weights
            update_stats = self.update(data, step)
            t2 = time.perf_counter()
            self.engine.sync(self.accelerator.unwrap_model(self.model))  # the next rollout samples the updated policy
            stats = self._mean_over_processes({**data.stats, **update_stats, "time/update": t2 - t1,
                                               "time/engine_sync": time.perf_counter() - t2,
                                               "time/step": time.perf_counter() - t0})
            if "kl" in stats:
                self.kl_controller.update(stats["kl"], n_steps=len(data.batch.prompts) * self.world)
            done = step + 1
            fire(self.callbacks, "on_step", self, done, {f"train/{k}": v for k, v in stats.items()})
            if main:
                bar.update(1)
                shown = {"reward": f"{stats['reward']:.3f}", **({"kl": f"{stats['kl']:.2f}"} if "kl" in stats else {}),
                         **({"success": f"{stats['success_rate']:.2f}"} if "success_rate" in stats else {})}
                bar.set_postfix(**shown)
                if done % cfg.log_every == 0 or done == self.total_steps:
                    self._log({"step": done, "lr": self.scheduler.get_last_lr()[0],
                               **{f"train/{k}": v for k, v in stats.items()}}, writer)
            self._after_step(done, writer)
        bar.close()
        watch = self.signal_watch
        if main and watch.steps and not watch.steps_with_signal:
            print(f"[tandem] warning: none of the {watch.steps} steps had anything to learn from (see the warning "
                  "above): the model is unchanged apart from any KL or entropy term", flush=True)
        result = self._finish(writer, started)
        result.learned = not watch.steps or watch.steps_with_signal > 0
        if main:
            self.rollouts.finish(result)
        return result


def load_prompts(config: OnlineRLConfig, tokenizer, task, setup: RunSetup | None = None) -> list[dict]:
    """Training prompts (with any extra columns for the reward) from the user's file or the task.

    With a chat `setup`, string prompts are rendered with the chat template (message-list prompts always are).
    """
    setup = setup or RunSetup("scratch", chat=False)
    if config.data is not None:
        rows = load_examples(config.data, PROMPT_FORMATS, tokenizer, max_length=config.max_length,
                             **setup.load_options(config))
        return [{key: value for key, value in row.items() if key not in ("completion", "chosen", "rejected")} for row in rows]
    rows = task.sft_examples(config.n_prompts, seed=config.seed)  # the task's columns (code: `tests`) go to the reward
    return setup.prompt_rows(tokenizer, [{key: value for key, value in row.items() if key != "completion"} for row in rows])


def run_online(config: OnlineRLConfig, trainer_class: type[OnlineTrainer], prompts: list[dict] | None = None,
               reward=None, eval_prompts: list[dict] | None = None, monitor=None, **trainer_options) -> TrainResult:
    """Load policy, reference, prompts, reward and evaluation prompts (each unless given), then run `trainer_class`.

    When a built-in task supplies a gold reward and the run optimises something else (a reward model, a
    judge, a user function), a `RewardHackingMonitor` (a callback) logs proxy and gold against KL and flags
    divergence. `trainer_options` may give other callbacks (`callbacks=[...]`).
    """
    from tandem.diagnostics.monitor import RewardHackingMonitor

    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    setup = prepare_run(config, tokenizer)
    policy = load_causal_lm(config.model)
    if config.lora_rank:  # only adapters train; the reference is the policy with them off, unless one is given
        policy = add_lora(policy, config.lora_rank, config.lora_alpha)
    model = trainer_class.prepare_model(policy)
    task = get_task(config.task) if config.data is None or config.reward == "task" else None
    if monitor is None and task is not None and config.reward != "task":
        monitor = RewardHackingMonitor(out=Path(config.out) / "monitor")
    # a reference costs a second copy of the model: loaded only when the KL is read (LoRA: the base serves)
    callbacks = [*trainer_options.get("callbacks", ()), *([monitor] if monitor is not None else [])]
    kl_read = bool(config.kl_metrics) or reads_kl(config, callbacks) or config.n_eval > 0
    needs_reference = config.ref_model is not None or (not config.lora_rank and kl_read)
    reference = (load_causal_lm(config.ref_model or config.model,
                                dtype=reference_dtype(config.mixed_precision, process_device()))
                 if needs_reference else None)
    if reward is None:
        # a reward model or local judge runs beside the policy: on its device, in its precision
        reward = build_reward(f"task:{config.task}" if config.reward == "task" else config.reward, tokenizer,
                              device=process_device(), dtype=frozen_model_dtype(config.mixed_precision))
    prompts = load_prompts(config, tokenizer, task, setup) if prompts is None else prompts
    if eval_prompts is None:
        eval_prompts = setup.eval_prompts(task, config, tokenizer)
    max_new_tokens = config.max_new_tokens or (task.max_new_tokens if task is not None else 64)
    trainer = trainer_class(config, model, tokenizer, prompts, reference, reward, task=task, eval_prompts=eval_prompts,
                            max_new_tokens=max_new_tokens, monitor=monitor,
                            eval_max_new_tokens=max_new_tokens if setup.chat else None, **trainer_options)
    return trainer.train()
