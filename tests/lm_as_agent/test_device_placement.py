"""Agent RL's step (episodes, returns, groups, advantages, update, evaluation) makes tensors that meet device tensors
on their device: a run under `VirtualDevice`, which records what would raise on a GPU."""

import pytest

from devices import every_step_on_a_virtual_device  # noqa: F401 (a fixture)


@pytest.mark.parametrize("advantage,history", [("grpo", "full"), ("gae", "none")])
def test_agent_rl_meets_no_host_tensor(advantage, history, tmp_path, corridor_model_dir,
                                       every_step_on_a_virtual_device, one_torch_thread):
    from tandem.lm_as_agent.trainer import AgentRLConfig, run_agent_rl

    run_agent_rl(AgentRLConfig(model=corridor_model_dir, env="corridor:length=3", max_turns=2, out=tmp_path / "run",
                               batch_size=2, episodes_per_start=2, n_eval=2, max_new_tokens=4, max_steps=1,
                               advantage=advantage, history=history, kl_coef=0.05, filter_ratio=0.5,
                               progress=False, threads=1, mixed_precision="no"))
    assert not every_step_on_a_virtual_device.faults, every_step_on_a_virtual_device.faults
