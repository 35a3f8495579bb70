"""Tensors that meet device tensors are made on their device: the harness itself, and GRPO and PPO runs (rollout,
scoring, advantages, update, evaluation) under `VirtualDevice`, which records what would raise on a GPU."""

import pytest
import torch

from devices import VirtualDevice, every_step_on_a_virtual_device  # noqa: F401 (a fixture)

DEVICE = torch.device("cpu")  # the accelerator's device object: where `device=` and `.to(device)` put a tensor


def test_the_harness_sees_a_host_tensor_indexed_by_device_rows():
    with VirtualDevice() as watch:
        rows = torch.arange(2).to(DEVICE)
        returns = torch.tensor([1.0, 2.0, 3.0])  # no device: on the host
        returns[rows]
    assert len(watch.faults) == 1 and "getitem" in next(iter(watch.faults.values()))


def test_the_harness_allows_what_cuda_allows():
    with VirtualDevice() as watch:
        values = torch.zeros(3, device=DEVICE)
        values[torch.arange(2)]                                      # host indices into a device tensor
        values * torch.tensor(2.0)                                   # a host scalar
        torch.where(values > 0, values, 0.0) + torch.ones(3).to(DEVICE)
        values.new_tensor([1.0, 2.0, 3.0]) - values                  # new_* inherits the device
    assert not watch.faults
    with VirtualDevice() as watch:
        torch.cat([torch.zeros(3, device=DEVICE), torch.ones(2)])
    assert watch.faults


@pytest.mark.parametrize("command", ["grpo", "ppo"])
def test_rl_on_prompts_meets_no_host_tensor(command, tmp_path, tiny_model_dir, every_step_on_a_virtual_device,
                                            one_torch_thread):
    from tandem.trainers.grpo import GRPOConfig, run_grpo
    from tandem.trainers.ppo import PPOConfig, run_ppo

    config_class, run = {"grpo": (GRPOConfig, run_grpo), "ppo": (PPOConfig, run_ppo)}[command]
    options = dict(samples_per_prompt=2, dynamic_sampling=True) if command == "grpo" else dict(reward="task")
    run(config_class(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", max_steps=1, batch_size=2,
                     max_new_tokens=4, n_eval=2, progress=False, kl_coef=0.05, mixed_precision="no", **options))
    assert not every_step_on_a_virtual_device.faults, every_step_on_a_virtual_device.faults
