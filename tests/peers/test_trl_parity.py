"""Parity with TRL: tandem's reward-model loss and DPO-family losses equal TRL's on the same work.

Both frameworks train the same tiny model on the same 16 sentiment preference pairs, as one batch of 16 (the
whole dataset, so data order cannot differ), in fp32, with the same AdamW (torch.optim.AdamW, same lr, betas,
eps, no weight decay), a constant learning rate without warm-up and the same gradient clipping, for 10
optimizer steps, logging the loss after every step. The first-step losses must agree to 1e-5 and the 10-step
trajectories to 1e-3 relative.

The TRL settings that matter (TRL 1.16 defaults differ from tandem's): `bf16=False` (TRL defaults to bf16),
`activation_checkpointing=False` (TRL turns gradient checkpointing on; it does not change the loss, but tandem
does not recompute), `optim="adamw_torch"` (TRL defaults to the fused AdamW, which rounds differently),
`lr_scheduler_type="constant"` with `warmup_steps=0`, `center_rewards_coefficient=None` for the reward model,
and `max_length=None` so nothing is truncated or filtered.
"""

import json

import pytest
import torch
from accelerate.state import AcceleratorState
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from tandem.data import load_examples, tokenize_preference
from tandem.models.loading import load_tokenizer
from tandem.tasks import get_task
from tandem.trainers.rm import RMConfig, run_rm

trl = pytest.importorskip("trl", reason="TRL not installed (pip install -e '.[peers]')")

PAIRS = 16
STEPS = 10
LR = 3e-4  # small enough that no loss (hinge) reaches exactly zero within the 10 steps
BETAS = (0.9, 0.999)
EPS = 1e-8  # torch.optim.AdamW's default, which tandem uses; TRL's adam_epsilon default is the same
MAX_GRAD_NORM = 1.0

# What tandem's loop does, spelled out (its defaults are cosine with warm-up, betas (0.9, 0.95), bf16 where native).
TANDEM_SETTINGS = {
    "batch_size": PAIRS, "micro_batch_size": PAIRS, "max_steps": STEPS, "lr": LR, "adam_betas": BETAS,
    "weight_decay": 0.0, "schedule": "constant", "warmup_ratio": 0.0, "max_grad_norm": MAX_GRAD_NORM,
    "mixed_precision": "no", "log_every": 1, "progress": False, "eval_fraction": 0.0, "max_length": 256,
}


def trl_settings(output_dir) -> dict:
    """The TrainingArguments knobs that make a TRL trainer do what `TANDEM_SETTINGS` makes tandem do."""
    return {
        "output_dir": str(output_dir), "per_device_train_batch_size": PAIRS, "gradient_accumulation_steps": 1,
        "max_steps": STEPS, "learning_rate": LR, "adam_beta1": BETAS[0], "adam_beta2": BETAS[1],
        "adam_epsilon": EPS, "weight_decay": 0.0, "optim": "adamw_torch", "lr_scheduler_type": "constant",
        "warmup_steps": 0, "max_grad_norm": MAX_GRAD_NORM, "bf16": False, "fp16": False,
        "activation_checkpointing": False, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "use_cpu": True, "seed": 0, "disable_tqdm": True, "dataloader_num_workers": 0, "max_length": None,
    }


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 0.3M-parameter model gains nothing from a second thread, and on a busy machine threads waiting for
    each other made these runs up to 25 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = get_task("sentiment").preference_pairs(PAIRS, seed=0)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny backbone with a seeded scalar head, saved once so both frameworks start from the same weights."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    folder = tmp_path_factory.mktemp("tiny-rm")
    model.save_pretrained(folder)
    load_tokenizer(tiny_model_dir).save_pretrained(folder)
    return folder


def tandem_preference_ids(pairs_file, tokenizer) -> list[dict]:
    """tandem's own tokenization of the pairs: prompt ids, and each response's ids with EOS appended."""
    return [tokenize_preference(row, tokenizer) for row in load_examples(pairs_file, "preference", tokenizer)]


def tandem_losses(run_dir) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in records if "train/loss" in r]


def trl_losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def assert_same_trajectory(tandem: list[float], peer: list[float]) -> None:
    assert len(tandem) == len(peer) == STEPS
    assert tandem[0] == pytest.approx(peer[0], abs=1e-5), f"first-step loss: tandem {tandem[0]}, TRL {peer[0]}"
    for step, (mine, theirs) in enumerate(zip(tandem, peer), start=1):
        assert mine == pytest.approx(theirs, rel=1e-3, abs=1e-7), f"step {step}: tandem {mine}, TRL {theirs}"
    assert tandem[-1] < tandem[0], "the run should have learned something, or the comparison proves little"


def test_reward_model_loss_matches_trl(tmp_path, pairs_file, reward_model_dir):
    from trl import RewardConfig, RewardTrainer

    tandem = run_rm(RMConfig(model=reward_model_dir, data=pairs_file, out=tmp_path / "tandem", **TANDEM_SETTINGS))

    # TRL's RewardTrainer tokenizes prompt + response as one string and appends EOS as text; tandem tokenizes
    # them apart and appends the EOS id. Handing TRL tandem's ids (its "processed dataset" path: chosen_ids and
    # rejected_ids, each the whole sequence) makes the inputs identical by construction. Both then pool the
    # score head at the last non-pad token (transformers' sequence-classification head, pad = <|pad|>).
    tokenizer = load_tokenizer(reward_model_dir)
    rows = [{"chosen_ids": e["prompt_ids"] + e["chosen_ids"], "rejected_ids": e["prompt_ids"] + e["rejected_ids"]}
            for e in tandem_preference_ids(pairs_file, tokenizer)]
    AcceleratorState._reset_state()
    trainer = RewardTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(reward_model_dir),
        args=RewardConfig(**trl_settings(tmp_path / "trl"), center_rewards_coefficient=None),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train()
    assert_same_trajectory(tandem_losses(tandem.model_dir.parent), trl_losses(trainer))


# ---- DPO family ----------------------------------------------------------------------------------------------
# tandem loss name -> (TRL loss_type, extra tandem settings, extra TRL settings). Robust DPO's label-flip
# probability is `label_smoothing` in both; IPO averages log-ratios over response tokens in both (tandem's
# default `ipo_average`, TRL's only form).
DPO_LOSSES = {
    "sigmoid": ("sigmoid", {}, {}),
    "ipo": ("ipo", {}, {}),
    "robust": ("robust", {"label_smoothing": 0.1}, {"label_smoothing": 0.1}),
    "hinge": ("hinge", {}, {}),
}
BETA = 0.1


@pytest.mark.parametrize("loss", sorted(DPO_LOSSES))
def test_dpo_loss_matches_trl(tmp_path, pairs_file, tiny_model_dir, loss):
    dpo = pytest.importorskip("tandem.trainers.dpo", reason="tandem's DPO trainer is not available yet")
    from trl import DPOConfig, DPOTrainer

    trl_loss, tandem_extra, trl_extra = DPO_LOSSES[loss]
    config = dpo.DPOConfig(model=tiny_model_dir, data=pairs_file, out=tmp_path / "tandem", loss=loss, beta=BETA,
                           **tandem_extra, **TANDEM_SETTINGS)
    tandem = dpo.run_dpo(config)

    # TRL's DPOTrainer always tokenizes text itself (prompt, and prompt + response + EOS-as-text, the response
    # being what follows the common prefix). The sentiment responses start with a space, so byte-level BPE's
    # pre-tokenizer splits there and this gives tandem's ids; checked below rather than assumed.
    tokenizer = load_tokenizer(tiny_model_dir)
    AcceleratorState._reset_state()
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=DPOConfig(**trl_settings(tmp_path / "trl"), loss_type=[trl_loss], beta=BETA, **trl_extra),
        train_dataset=Dataset.from_list(load_examples(pairs_file, "preference", tokenizer)),
        processing_class=tokenizer,
    )
    theirs = [{k: trainer.train_dataset[i][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
              for i in range(len(trainer.train_dataset))]
    assert theirs == tandem_preference_ids(pairs_file, tokenizer), "TRL tokenized the pairs differently"
    trainer.train()
    assert_same_trajectory(tandem_losses(tandem.model_dir.parent), trl_losses(trainer))
