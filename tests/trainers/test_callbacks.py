"""Callbacks on both training loops: on_rollout (online), on_step, on_evaluate and on_train_end, in that order."""

import json

from tandem.data import tokenize_sft
from tandem.models.loading import load_causal_lm, load_tokenizer
from tandem.tasks import get_task
from tandem.trainers.callbacks import Callback
from tandem.trainers.grpo import GRPOConfig, GRPOTrainer
from tandem.trainers.online import run_online
from tandem.trainers.sft import SFTConfig, SFTTrainer


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_rollout(self, trainer, step, batch, stats):
        self.calls.append(("rollout", step))
        return {"recorder/completions": float(len(batch.completions))}

    def on_step(self, trainer, step, record):
        self.calls.append(("step", step, "train/loss" in record))

    def on_evaluate(self, trainer, step, metrics):
        self.calls.append(("evaluate", step))
        return {"eval/recorder": 1.0}

    def on_train_end(self, trainer, writer):
        self.calls.append(("end",))


class KLReader(Callback):
    reads_kl = True  # the online loop then measures the KL to the reference every step, as for the monitor

    def __init__(self):
        self.saw_kl = []

    def on_rollout(self, trainer, step, batch, stats):
        self.saw_kl.append("kl" in stats)


def test_the_supervised_loop_calls_its_callbacks(tmp_path, tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    rows = get_task("sentiment").sft_examples(16, seed=0)
    examples = [tokenize_sft(row, tokenizer, 64) for row in rows]
    config = SFTConfig(model=tiny_model_dir, out=tmp_path / "run", max_steps=3, batch_size=4, micro_batch_size=2,
                       eval_every=2, mixed_precision="no", progress=False)
    recorder = Recorder()
    result = SFTTrainer(config, load_causal_lm(tiny_model_dir), tokenizer, examples, examples[:4],
                        callbacks=[recorder]).train()
    assert recorder.calls == [("step", 1, True), ("step", 2, True), ("evaluate", 2), ("step", 3, True), ("end",),
                              ("evaluate", 3)]
    assert result.metrics["eval/recorder"] == 1.0


def test_the_online_loop_calls_its_callbacks_and_logs_what_they_return(tmp_path, tiny_model_dir):
    recorder = Recorder()
    config = GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", max_steps=2, batch_size=2,
                        samples_per_prompt=2, max_new_tokens=4, n_eval=2, progress=False, log_every=1,
                        mixed_precision="no")
    kl_reader = KLReader()
    run_online(config, GRPOTrainer, callbacks=[recorder, kl_reader])
    assert kl_reader.saw_kl == [True, True]
    assert recorder.calls == [("rollout", 0), ("step", 1, True), ("rollout", 1), ("step", 2, True), ("end",),
                              ("evaluate", 2)]
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["train/recorder/completions"] == 4.0
