"""The config base: input paths validated by their type, micro-batches capped by each config's own rule."""

import pytest
from pydantic import ValidationError

from tandem.lm_as_agent.trainer import AgentRLConfig
from tandem.trainers.grpo import GRPOConfig
from tandem.trainers.sft import SFTConfig


def test_input_paths_must_exist_whatever_config_declares_them(tmp_path):
    for config_class, field in ((SFTConfig, "data"), (SFTConfig, "eval_data"), (GRPOConfig, "ref_model"),
                                (AgentRLConfig, "shaping_model")):
        with pytest.raises(ValidationError, match="does not exist"):
            config_class(**{field: tmp_path / "missing"})
    (tmp_path / "data.jsonl").write_text("")
    assert SFTConfig(data=tmp_path / "data.jsonl").data == tmp_path / "data.jsonl"
    assert AgentRLConfig(history="none").history == "none"  # a word here, not a path


def test_micro_batches_are_capped_by_each_configs_rule_on_creation_and_assignment():
    assert SFTConfig(batch_size=4, micro_batch_size=16).micro_batch_size == 4
    config = SFTConfig(batch_size=8)
    config.micro_batch_size = 32
    assert config.micro_batch_size == 8
    # RL micro-batches count sequences (prompts x samples); agent RL's count episode turns (no cap)
    assert GRPOConfig(batch_size=2, samples_per_prompt=4, micro_batch_size=16).micro_batch_size == 8
    assert AgentRLConfig(batch_size=2, micro_batch_size=16).micro_batch_size == 16
