"""The LM world model of `tandem world-model` as an environment: a policy trained inside a learned simulator.

``worldmodel:RUN_DIR:env=frozenlake:size=4`` (or ``env=taxi``): training episodes start from real start states
(the real env's first observation for the seed, as Dyna-style methods start imagined rollouts from real
states) and then every step is the world model's prediction f_LLM(s_t, a_t) -> (s_{t+1}, r_t, done) (the LM
world model of Hafner et al. / Lin et al.'s text form: next state, reward and termination decoded as text).
A prediction that does not parse ends the imagined episode with reward 0 (never a guess). The ``eval`` split
is the real environment: the policy is scored where it matters.
"""

from __future__ import annotations

from pathlib import Path

from tandem.lm_as_agent.env import (
    EnvSuite, GymTextEnv, StepResult, TextEnv, invalid_reply, make_env_suite, register_env_kind,
)
from tandem.lm_inside_agents.render import parse_action_name

REAL_ENVS = {"frozenlake": "frozenlake:size={size}", "taxi": "Taxi-v4"}


class ImaginedEnv(TextEnv):
    """`real`'s start states and instructions; transitions predicted by `world_model` (an `LMWorldModel`)."""

    def __init__(self, real: GymTextEnv, world_model):
        self.real, self.world_model = real, world_model
        self.instructions, self.names = real.instructions, real.names
        self.state = ""
        self.imagined_steps = 0

    def reset(self, seed: int | None = None) -> str:
        self.state = self.real.reset(seed)
        return self.state

    def step(self, action: str) -> StepResult:
        index = parse_action_name(action, self.names)
        if index is None:
            return invalid_reply(action, self.names, self.state, self.real.invalid, self.real.invalid_penalty)
        prediction = self.world_model.predict([self.state], [index])[0]
        self.imagined_steps += 1
        if not prediction.valid:
            return StepResult(self.state, 0.0, True, False,
                              {"invalid_action": False, "success": False, "world_model_error": prediction.error})
        self.state = prediction.next_state
        info = {"invalid_action": False, "action": self.names[index]}
        if prediction.done:
            info["success"] = prediction.reward > 0
        return StepResult(self.state, float(prediction.reward), bool(prediction.done), False, info)


def load_world_model(path: str | Path, names: list[str]):
    """The `LMWorldModel` of a `tandem world-model` run directory (its ``lm/model``) or of a model directory."""
    from tandem.lm_inside_agents.world_model import LMWorldModel, saved_format
    from tandem.models.loading import load_causal_lm, load_tokenizer

    path = Path(path)
    folder = path / "lm" / "model" if (path / "lm" / "model").is_dir() else path
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no world model in {path}: give a `tandem world-model` run directory or a model directory")
    return LMWorldModel(load_causal_lm(folder), load_tokenizer(folder), names, max_new_tokens=96,
                        spaced=saved_format(folder)["spaced_cells"])


@register_env_kind("worldmodel")
def _worldmodel_kind(spec: str, path: str | None, invalid, invalid_penalty: float, env: str = "frozenlake",
                     size: int = 4, max_turns: int | None = None) -> EnvSuite:
    if not path:
        raise ValueError(f"{spec!r}: name the world-model run directory, e.g. worldmodel:runs/world-model")
    if env not in REAL_ENVS:
        raise ValueError(f"{spec!r}: env must be one of {', '.join(REAL_ENVS)}")
    real = make_env_suite(REAL_ENVS[env].format(size=size), invalid=invalid, invalid_penalty=invalid_penalty)
    world_model = load_world_model(path, real.make("train").names)

    def make(split: str) -> TextEnv:
        return real.make("eval") if split == "eval" else ImaginedEnv(real.make("train"), world_model)

    return EnvSuite(spec, make, max_turns or real.max_turns)
