"""The LM world model as an environment: imagined steps in training, the real env in evaluation."""

from tandem.lm_as_agent.env import make_env_suite
from tandem.lm_as_agent.imagined import ImaginedEnv
from tandem.lm_inside_agents.world_model import Prediction


class ScriptedModel:
    """Stands in for an LMWorldModel: the next state says which action was taken; 'up' is unreadable."""

    def __init__(self):
        self.queries = []

    def predict(self, states, actions):
        self.queries += list(zip(states, actions))
        if actions[0] == 3:
            return [Prediction(None, 0.0, True, error="not understood")]
        return [Prediction(f"after {actions[0]}", 1.0 if actions[0] == 2 else 0.0, actions[0] == 2)]


def test_imagined_steps_come_from_the_world_model():
    real = make_env_suite("frozenlake:size=4").make("train")
    model = ScriptedModel()
    env = ImaginedEnv(real, model)
    start = env.reset(seed=5)
    assert start == real.reset(seed=5) and env.instructions == real.instructions  # a real start state
    step = env.step("down")
    assert step.observation == "after 1" and not step.terminated and model.queries == [(start, 1)]
    assert env.step("dance").info["invalid_action"] and len(model.queries) == 1  # invalid: no model query
    win = env.step("right")
    assert win.terminated and win.reward == 1.0 and win.info["success"]
    env.reset(seed=5)
    broken = env.step("up")
    assert broken.terminated and broken.reward == 0 and broken.info["world_model_error"] == "not understood"


def test_a_saved_world_model_is_loaded_in_the_text_format_it_was_trained_on(tmp_path, tiny_model_dir):
    """`agent-rl --env worldmodel:DIR` asks the model in its training format: spaced map cells when its run wrote
    them (`tandem_world_model.json` beside the weights), plain cells for a model saved without that record."""
    import shutil

    from tandem.lm_as_agent.imagined import load_world_model
    from tandem.lm_inside_agents.world_model import FORMAT_FILE

    assert not load_world_model(tiny_model_dir, ["left", "right"]).spaced
    folder = tmp_path / "run" / "lm" / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / FORMAT_FILE).write_text('{"spaced_cells": true}\n')
    assert load_world_model(tmp_path / "run", ["left", "right"]).spaced
