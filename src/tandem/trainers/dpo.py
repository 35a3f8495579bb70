"""`tandem dpo`: direct preference optimisation (Rafailov et al. 2023, eq. 7) and its family, one loss chosen by name.

Chosen and rejected responses go through the policy in one forward pass (2B rows). Reference
log-probabilities are computed once before training and cached with the examples (or recomputed each
step with `--no-precompute-ref`); with LoRA the reference is the base model with the adapter disabled,
so no second copy of the weights is held. Reference-free losses (SimPO, ORPO) skip the reference.
`--loss kto` trains on unpaired (prompt, completion, good/bad) data instead (Ethayarajh et al. 2024, below).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator

from tandem.config import InputPath
from tandem.algorithms.preference import (
    NEEDS_REFERENCE, PREFERENCE_LOSS_FACTS, PREFERENCE_LOSSES, PairedLogps, UnpairedLogps, preference_loss,
)
from tandem.data import (
    pad_preference_batch, pad_prompt_response_batch, pad_unpaired_batch, tokenize_preference, tokenize_unpaired,
)
from tandem.policy_eval import gold_eval
from tandem.generation import completion_log_probs
from tandem.models.loading import add_lora, evaluating, load_causal_lm, process_device, reference_and_context, save_model
from tandem.trainers.loop import GenerativeTrainer, LossOutput, TrainResult, reference_dtype, resolve_precision
from tandem.trainers.sft import FinetuneSourceConfig
from tandem.trainers.setup import RunSetup
from tandem.trainers.sources import prepare_finetune


class DPOConfig(FinetuneSourceConfig):
    out: Path = Field(Path("runs/dpo"), description="Run directory.")
    model: Path = Field(Path("runs/sft/model"), description="Policy to start from (usually the SFT model): a model directory, a .gguf file or a LoRA adapter folder.")
    ref_model: InputPath | None = Field(None, description="Reference model directory (default: --model; with LoRA: the base with the adapter off).")
    loss: str = Field(
        "sigmoid", description="Loss by name: sigmoid (DPO), ipo, robust, hinge, simpo, orpo; kto for unpaired (prompt, completion, label) data."
    )
    desirable_weight: float = Field(1.0, gt=0, description="KTO: weight of desirable examples (lambda_D).")
    undesirable_weight: float = Field(1.0, gt=0, description="KTO: weight of undesirable examples (lambda_U).")
    beta: float = Field(0.1, gt=0, description="beta: strength of the implicit KL constraint (IPO's tau; SimPO/ORPO's scale).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Label-noise epsilon of conservative (sigmoid) and robust DPO.")
    simpo_gamma: float = Field(0.5, description="SimPO target reward margin gamma: -log sigma(beta * (avg logp_w - avg logp_l) - gamma).")
    orpo_lambda: float | None = Field(None, gt=0, description="ORPO: weight lambda of the odds-ratio term against the NLL (default: --beta, as TRL).")
    ipo_average: bool = Field(True, description="IPO: log-ratios averaged over response tokens (TRL), else summed (the paper).")
    pairs: Literal["task", "sampled"] = Field(
        "task", description="Built-in task pairs: the task's own (task) or two samples of --model per prompt, ranked by the gold reward (sampled)."
    )
    label_noise: float = Field(0.0, ge=0, le=0.5, description="Fraction of built-in task pairs whose labels are flipped.")
    precompute_ref: bool = Field(True, description="Compute each example's reference log-probs once, the first time a batch holds it, and keep them (else every step).")
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (used when --max-steps is not set).")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate of AdamW (pretrained models: 1e-6, TRL's default).")

    pretrained_defaults = {"lr": 1e-6}

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        if value not in PREFERENCE_LOSSES:
            raise ValueError(f"unknown loss {value!r}; known: {', '.join(PREFERENCE_LOSSES)}")
        return value


def loss_options(config: DPOConfig) -> dict:
    """The config values the chosen loss declares as its options (its registry entry)."""
    return {name: getattr(config, name) for name in PREFERENCE_LOSS_FACTS[config.loss]["options"]}


class DPOTrainer(GenerativeTrainer):
    name = "dpo"

    def __init__(self, config: DPOConfig, model, reference, tokenizer, train, held_out, task=None, eval_prompts=(),
                 eval_max_new_tokens: int | None = None):
        self.needs_reference = NEEDS_REFERENCE[config.loss]
        # each example's reference log-probs the first time a batch holds it: only the steps that run pay for them
        self.cache_reference = self.needs_reference and config.precompute_ref
        self.loss_options = loss_options(config)
        self.reference = reference
        super().__init__(config, model, tokenizer, train, held_out, task=task, eval_prompts=eval_prompts,
                         eval_max_new_tokens=eval_max_new_tokens)
        if self.reference is not None:
            self.reference.to(self.accelerator.device).eval().requires_grad_(False)

    reference_key = "ref_chosen"  # what `_cache_reference` stores in an example

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if self.cache_reference:
            missing = [e for e in examples if self.reference_key not in e]
            if missing:
                self._cache_reference(missing)
        return self.pad(examples)

    def pad(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """The examples as one padded batch (with their cached reference log-probs when they have them)."""
        batch = pad_preference_batch(examples, self.tokenizer.pad_token_id)
        if "ref_chosen" in examples[0]:
            batch["ref_chosen"] = torch.tensor([e["ref_chosen"] for e in examples])
            batch["ref_rejected"] = torch.tensor([e["ref_rejected"] for e in examples])
        return batch

    def batch_units(self, batch) -> int:
        return int(batch["input_ids"].shape[0] // 2)

    @torch.no_grad()
    def _reference_logps(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        model, context = reference_and_context(self.accelerator.unwrap_model(self.model), self.reference)
        with context(), self.accelerator.autocast(), evaluating(model):
            logps, _ = completion_log_probs(model, batch)
        half = logps.shape[0] // 2
        return logps[:half].float(), logps[half:].float()

    def _cache_reference(self, examples: list[dict]) -> None:
        """Reference log-probs computed once (in eval mode, no grad) and stored with each example."""
        step = self.config.micro_batch_size
        for start in range(0, len(examples), step):
            chunk = examples[start : start + step]
            batch = self._to_device(self.pad(chunk))
            chosen, rejected = self._reference_logps(batch)
            for example, c, r in zip(chunk, chosen.tolist(), rejected.tolist()):
                example["ref_chosen"], example["ref_rejected"] = c, r

    def compute_loss(self, model, batch) -> LossOutput:
        logps, lengths = completion_log_probs(model, batch)
        half = logps.shape[0] // 2
        reference = (None, None)
        if self.needs_reference:
            reference = (batch["ref_chosen"], batch["ref_rejected"]) if "ref_chosen" in batch else self._reference_logps(batch)
        inputs = PairedLogps(
            policy_chosen=logps[:half].float(), policy_rejected=logps[half:].float(),
            ref_chosen=reference[0], ref_rejected=reference[1],
            chosen_lengths=lengths[:half], rejected_lengths=lengths[half:],
            chosen_nll=-(logps[:half].float() / lengths[:half].clamp(min=1)),
        )
        cfg = self.config
        out = preference_loss(cfg.loss, inputs, cfg.beta, **self.loss_options)
        stats = {
            "rewards/chosen": float(out.chosen_rewards.sum()),
            "rewards/rejected": float(out.rejected_rewards.sum()),
            "rewards/margin": float((out.chosen_rewards - out.rejected_rewards).sum()),
            "rewards/accuracy": float((out.chosen_rewards > out.rejected_rewards).float().sum()),
            "logps/chosen": float(inputs.policy_chosen.detach().sum()),
            "logps/rejected": float(inputs.policy_rejected.detach().sum()),
        }
        return LossOutput(out.loss.sum(), stats)

    def evaluate(self, model) -> dict[str, float]:
        """Held-out loss and implicit-reward accuracy; with a task, gold reward and KL to the reference."""
        metrics = super(GenerativeTrainer, self).evaluate(model)
        if self.task is None or not self.eval_prompts:
            return metrics
        reference, context = reference_and_context(model, self.reference)
        gold = gold_eval(model, self.tokenizer, self.task, self.eval_prompts, reference=reference,
                         reference_context=context, max_new_tokens=self.eval_max_new_tokens)
        metrics.update({f"eval/{k}": v for k, v in gold.items()})
        return metrics

    def save_final(self, model, folder: Path) -> None:
        save_model(model, self.tokenizer, folder, merge_lora=self.config.merge_lora)


def sampled_pairs(model, tokenizer, task, n: int, seed: int, label_noise: float = 0.0, setup: RunSetup | None = None,
                  max_new_tokens: int | None = None) -> list[dict]:
    """Preference pairs from the model itself: two samples per training prompt, ranked by the gold reward.

    This is the DPO paper's setting (Rafailov et al. 2023, IMDb): preferences over the SFT model's own
    completions (`tandem.preference_data.pairs.gold_ranked_pairs`: ties dropped, labels swapped with probability
    `label_noise`). With a chat `setup` the prompts are rendered with the chat template (the pairs carry the
    rendered prompt).
    """
    from tandem.preference_data.pairs import gold_ranked_pairs

    rows = [{"prompt": row["prompt"]} for row in task.sft_examples(n, seed=seed)]
    prompts = [row["prompt"] for row in (setup.prompt_rows(tokenizer, rows) if setup is not None else rows)]
    return gold_ranked_pairs(model, tokenizer, task, prompts, seed, label_noise, max_new_tokens)


def run_dpo(config: DPOConfig) -> TrainResult:
    if not PREFERENCE_LOSS_FACTS[config.loss]["paired"]:
        return run_kto(config)
    run = prepare_finetune(config)
    tokenizer, setup, task = run.tokenizer, run.setup, run.task
    model, reference = load_policy_and_reference(config, NEEDS_REFERENCE[config.loss], task is not None)
    if task is not None and config.pairs == "sampled":
        from tandem.data import load_examples

        device = process_device()  # sampled where the policy trains, in its precision
        model.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(config.mixed_precision) == "bf16"):
            rows = sampled_pairs(model, tokenizer, task, config.n_train, config.seed, config.label_noise, setup=setup,
                                 max_new_tokens=setup.eval_max_new_tokens(task))
        # the prompts are rendered already; the responses are the model's own text
        train = load_examples(rows, "preference", tokenizer, max_length=config.max_length, rows_name="<sampled pairs>",
                              **{**setup.load_options(config), "chat": False})
        _, held_out = run.examples("preference", data=None, eval_data=None, n_train=1, eval_fraction=0.0,
                                   label_noise=0.0)
    else:
        train, held_out = run.examples("preference")
    train_ids = [tokenize_preference(r, tokenizer, config.max_length) for r in train]
    eval_ids = [tokenize_preference(r, tokenizer, config.max_length) for r in held_out]
    return DPOTrainer(config, model, reference, tokenizer, train_ids, eval_ids, **run.evaluation()).train()


def load_policy_and_reference(config: DPOConfig, needs_reference: bool, has_task: bool):
    """The policy (with LoRA if asked) and the frozen reference (None when LoRA's disabled adapter serves)."""
    model = load_causal_lm(config.model)
    reference = None
    dtype = reference_dtype(config.mixed_precision, process_device())
    if config.lora_rank:
        model = add_lora(model, config.lora_rank, config.lora_alpha)
        if config.ref_model is not None:
            reference = load_causal_lm(config.ref_model, dtype=dtype)
    elif needs_reference or has_task:  # with a task, the reference also measures KL at evaluation
        reference = load_causal_lm(config.ref_model or config.model, dtype=dtype)
    return model, reference


# ---- KTO: unpaired (prompt, completion, good/bad) data ------------------------------------------------
def with_mismatched_partners(examples: list[dict]) -> list[dict]:
    """Give example i the completion of example i+1 (cyclically) for the KL reference point."""
    n = len(examples)
    return [{**e, "kl_completion_ids": examples[(i + 1) % n]["completion_ids"]} for i, e in enumerate(examples)]


class KTOTrainer(DPOTrainer):
    name = "kto"
    reference_key = "ref_logps"

    def pad(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_unpaired_batch(examples, self.tokenizer.pad_token_id)
        mismatched = pad_prompt_response_batch(
            [e["prompt_ids"] for e in examples], [e["kl_completion_ids"] for e in examples], self.tokenizer.pad_token_id
        )
        batch.update({f"kl_{key}": value for key, value in mismatched.items()})
        if "ref_logps" in examples[0]:
            batch["ref_logps"] = torch.tensor([e["ref_logps"] for e in examples])
            batch["ref_kl_logps"] = torch.tensor([e["ref_kl_logps"] for e in examples])
        return batch

    def batch_units(self, batch) -> int:
        return int(batch["input_ids"].shape[0])

    @staticmethod
    def _mismatched(batch) -> dict[str, torch.Tensor]:
        return {key[3:]: value for key, value in batch.items() if key.startswith("kl_")}

    @torch.no_grad()
    def _reference_logps(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        model, context = reference_and_context(self.accelerator.unwrap_model(self.model), self.reference)
        with context(), self.accelerator.autocast(), evaluating(model):
            matched, _ = completion_log_probs(model, batch)
            mismatched, _ = completion_log_probs(model, self._mismatched(batch))
        return matched.float(), mismatched.float()

    def _cache_reference(self, examples: list[dict]) -> None:
        step = self.config.micro_batch_size
        for start in range(0, len(examples), step):
            chunk = examples[start : start + step]
            matched, mismatched = self._reference_logps(self._to_device(self.pad(chunk)))
            for example, m, k in zip(chunk, matched.tolist(), mismatched.tolist()):
                example["ref_logps"], example["ref_kl_logps"] = m, k

    def compute_loss(self, model, batch) -> LossOutput:
        logps, _ = completion_log_probs(model, batch)
        if "ref_logps" in batch:
            ref_logps, ref_kl_logps = batch["ref_logps"], batch["ref_kl_logps"]
        else:
            ref_logps, ref_kl_logps = self._reference_logps(batch)
        with torch.no_grad():
            kl_logps, _ = completion_log_probs(model, self._mismatched(batch))
        # z0 = max(0, mean KL) over the whole global batch: average across processes before clamping
        kl_mean = self.accelerator.reduce((kl_logps.float() - ref_kl_logps).mean(), reduction="mean")
        out = preference_loss(self.config.loss, UnpairedLogps(logps.float(), ref_logps, batch["label"], kl_mean),
                              self.config.beta, **self.loss_options)
        losses, rewards = out.loss, out.rewards
        desirable = batch["label"].bool()
        stats = {
            "kl_reference_point": float(kl_mean.clamp(min=0)) * len(losses),
            "rewards/desirable": float(rewards[desirable].sum()),
            "rewards/undesirable": float(rewards[~desirable].sum()),
            "rewards/accuracy": float(((rewards > 0) == desirable).float().sum()),
        }
        return LossOutput(losses.sum(), stats)


def run_kto(config: DPOConfig) -> TrainResult:
    run = prepare_finetune(config)
    tokenizer = run.tokenizer
    model, reference = load_policy_and_reference(config, NEEDS_REFERENCE[config.loss], has_task=run.task is not None)
    train, held_out = run.examples("unpaired")
    train_ids = with_mismatched_partners([tokenize_unpaired(r, tokenizer, config.max_length) for r in train])
    eval_ids = with_mismatched_partners([tokenize_unpaired(r, tokenizer, config.max_length) for r in held_out])
    return KTOTrainer(config, model, reference, tokenizer, train_ids, eval_ids, **run.evaluation()).train()
