"""PPO-RLHF's own piece, the value head: it trains, is saved next to the policy, and comes back on resume."""

import pytest
import torch
from safetensors.torch import load_file

from tandem.models.loading import load_causal_lm, load_weights
from tandem.trainers.ppo import VALUE_HEAD_FILE, PolicyWithValueHead, PPOConfig, run_ppo


def _value_head(folder):
    return load_file(str(folder / VALUE_HEAD_FILE))


def test_the_value_head_round_trips_through_a_checkpoint_folder(tmp_path, tiny_model_dir, one_torch_thread):
    model = PolicyWithValueHead(load_causal_lm(tiny_model_dir))
    with torch.no_grad():
        model.value_head.weight.normal_(generator=torch.Generator().manual_seed(0))
        model.value_head.bias.fill_(0.25)
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file() and (tmp_path / "saved" / VALUE_HEAD_FILE).is_file()

    fresh = PolicyWithValueHead(load_causal_lm(tiny_model_dir))
    assert not torch.equal(fresh.value_head.weight, model.value_head.weight)
    load_weights(fresh, tmp_path / "saved")  # what resume calls
    assert torch.equal(fresh.value_head.weight, model.value_head.weight)
    assert torch.equal(fresh.value_head.bias, model.value_head.bias)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(fresh(ids).values, model(ids).values) and fresh(ids).values.shape == (1, 4)


def test_resume_restores_the_trained_value_head(tmp_path, tiny_model_dir, one_torch_thread, monkeypatch):
    options = dict(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", reward="task", batch_size=2,
                   max_new_tokens=6, n_eval=0, update_epochs=1, minibatches=1, progress=False, mixed_precision="no",
                   lr=1e-2, final_checkpoint=True)
    run_ppo(PPOConfig(max_steps=1, **options))
    checkpoint = tmp_path / "run" / "checkpoints" / "step-0000001"
    trained = _value_head(checkpoint)
    assert trained["bias"].abs().item() > 0  # the update moved the head off its zero-initialised bias

    restored = {}
    original = PolicyWithValueHead.load_checkpoint

    def spy(self, folder):
        original(self, folder)
        restored.update({name: value.detach().clone() for name, value in self.value_head.state_dict().items()})

    monkeypatch.setattr(PolicyWithValueHead, "load_checkpoint", spy)
    run_ppo(PPOConfig(max_steps=2, resume=True, **options))
    assert restored.keys() == trained.keys()
    for name in trained:
        assert torch.equal(restored[name], trained[name]), name
    final = _value_head(tmp_path / "run" / "model")
    assert not torch.equal(final["weight"], trained["weight"])  # step 2 trained on from the restored head
