"""A tiny model that already answers the corridor's prompts with a valid action, half left and half right."""

import pytest


@pytest.fixture(scope="session")
def corridor_model_dir(tmp_path_factory):
    """~0.1M-parameter Llama behaviour-cloned on a uniformly random corridor policy (`--model tiny`'s builder)."""
    from tandem.lm_as_agent.env import make_env_suite
    from tandem.lm_as_agent.warmstart import build_random_policy

    return build_random_policy(make_env_suite("corridor:length=3"), tmp_path_factory.mktemp("corridor-llama"),
                               n_states=60, steps=60)
