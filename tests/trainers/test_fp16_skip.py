"""fp16: a skipped non-finite step updates the gradient scaler, so the next step can unscale again."""

from types import SimpleNamespace

import pytest
import torch

from tandem.trainers.loop import Trainer


def test_a_non_finite_fp16_step_is_skipped_and_the_scaler_lowers_its_scale():
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)

    def clip(parameters, limit):
        scaler.unscale_(optimizer)  # what accelerate's clip_grad_norm_ does under fp16
        return torch.nn.utils.clip_grad_norm_(list(parameters), limit)

    trainer = Trainer.__new__(Trainer)
    trainer.config = SimpleNamespace(max_grad_norm=1.0, max_bad_steps=3)
    trainer.accelerator = SimpleNamespace(clip_grad_norm_=clip, scaler=scaler, is_main_process=False)
    trainer.model, trainer.optimizer, trainer.bad_steps = model, optimizer, 0
    trainer.scheduler = SimpleNamespace(step=lambda: None)
    before = model.weight.detach().clone()
    scaler.scale(model(torch.tensor([[float("inf"), 1.0]])).sum()).backward()
    assert not torch.isfinite(torch.tensor(trainer._optimizer_step(0, lambda: "batch")))
    assert trainer.bad_steps == 1 and torch.equal(model.weight, before)
    assert scaler.get_scale() == pytest.approx(2.0**9)  # the scaler took the inf into account
    # the next, finite step unscales again without "unscale_() has already been called"
    scaler.scale(model(torch.tensor([[1.0, 1.0]])).sum()).backward()
    trainer.optimizer = SimpleNamespace(step=lambda: (scaler.step(optimizer), scaler.update()),
                                        zero_grad=optimizer.zero_grad)
    assert torch.isfinite(torch.tensor(trainer._optimizer_step(1, lambda: "batch")))
    assert not torch.equal(model.weight, before)
