"""`tandem dpo --loss kto`: Kahneman-Tversky optimisation on unpaired (prompt, completion, good/bad) data.

KTO (Ethayarajh et al. 2024) needs no pairs: each example is desirable or not. Its reference point z0
estimates KL(policy || reference) on mismatched completions (each prompt with another example's
completion, a fixed partner per example so the reference side can be cached), without gradient, as
TRL does; the per-example loss is in `tandem.algorithms.preference.kto_loss`.
"""

from __future__ import annotations

import torch
from transformers import set_seed

from tandem.algorithms.preference import kto_loss
from tandem.data import pad_prompt_response_batch, pad_unpaired_batch, tokenize_unpaired
from tandem.generation import completion_log_probs
from tandem.models.loading import load_tokenizer, reference_and_context
from tandem.tasks import get_task
from tandem.trainers.dpo import DPOConfig, DPOTrainer, load_policy_and_reference
from tandem.trainers.loop import LossOutput, TrainResult
from tandem.trainers.setup import prepare_run
from tandem.trainers.sources import train_eval_examples


def with_mismatched_partners(examples: list[dict]) -> list[dict]:
    """Give example i the completion of example i+1 (cyclically) for the KL reference point."""
    n = len(examples)
    return [{**e, "kl_completion_ids": examples[(i + 1) % n]["completion_ids"]} for i, e in enumerate(examples)]


class KTOTrainer(DPOTrainer):
    name = "kto"

    @staticmethod
    def select_options(config: DPOConfig) -> dict:
        return {"desirable_weight": config.desirable_weight, "undesirable_weight": config.undesirable_weight}

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
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
        with context(), self.accelerator.autocast():
            matched, _ = completion_log_probs(model, batch)
            mismatched, _ = completion_log_probs(model, self._mismatched(batch))
        return matched.float(), mismatched.float()

    def _cache_reference(self, examples: list[dict]) -> None:
        step = self.config.micro_batch_size
        for start in range(0, len(examples), step):
            chunk = examples[start : start + step]
            matched, mismatched = self._reference_logps(self._to_device(self.collate(chunk)))
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
        losses, rewards = kto_loss(
            logps.float(), ref_logps, batch["label"], kl_mean, self.config.beta, **self.loss_options
        )
        desirable = batch["label"].bool()
        stats = {
            "kl_reference_point": float(kl_mean.clamp(min=0)) * len(losses),
            "rewards/desirable": float(rewards[desirable].sum()),
            "rewards/undesirable": float(rewards[~desirable].sum()),
            "rewards/accuracy": float(((rewards > 0) == desirable).float().sum()),
        }
        return LossOutput(losses.sum(), stats)


def run_kto(config: DPOConfig) -> TrainResult:
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    setup = prepare_run(config, tokenizer)
    task = get_task(config.task) if config.data is None else None
    model, reference = load_policy_and_reference(config, needs_reference=True, has_task=task is not None)
    train, held_out = train_eval_examples(
        "unpaired", data=config.data, eval_data=config.eval_data, task_name=config.task, n_train=config.n_train,
        n_eval=config.n_eval, eval_fraction=config.eval_fraction, seed=config.seed, tokenizer=tokenizer,
        max_length=config.max_length, **setup.load_options(config),
    )
    train_ids = with_mismatched_partners([tokenize_unpaired(r, tokenizer, config.max_length) for r in train])
    eval_ids = with_mismatched_partners([tokenize_unpaired(r, tokenizer, config.max_length) for r in held_out])
    trainer = KTOTrainer(config, model, reference, tokenizer, train_ids, eval_ids, task=task,
                         eval_prompts=setup.eval_prompts(task, config, tokenizer),
                         eval_max_new_tokens=setup.eval_max_new_tokens(task))
    return trainer.train()
