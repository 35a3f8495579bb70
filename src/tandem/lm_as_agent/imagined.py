"""The LM world model of `tandem world-model` as an environment: a policy trained inside a learned simulator.

``worldmodel:RUN_DIR``: training episodes start from real start states (the real env's first observation for
the seed, as Dyna-style methods start imagined rollouts from real states) and then every step is the world
model's prediction f_LLM(s_t, a_t) -> (s_{t+1}, r_t, done) (the LM world model of Hafner et al. / Lin et al.'s
text form: next state, reward and termination decoded as text). A prediction that does not parse ends the
imagined episode with reward 0 (never a guess). The ``eval`` split is the real environment: the policy is scored
where it matters. The real env is the one the world model was trained on (recorded beside its weights:
``frozenlake:size=4``, ``Taxi-v4``, ``babyai:GoToObj``); ``env=frozenlake:size=8`` or ``env=taxi`` names it for
a model saved without that record.

This module also runs `tandem world-model` on an agent's text env (``--env babyai:GoToObj``): the transitions
are the observations a language agent reads there (`run_agent_world_model`).
"""

from __future__ import annotations

from tandem.lm_as_agent.env import (
    EnvSuite, GymTextEnv, StepResult, TextEnv, invalid_reply, make_env_suite, register_env_kind,
)
from tandem.lm_inside_agents.experiments.world_model import WorldModelConfig, is_toy_text, run_world_model
from tandem.lm_inside_agents.render import parse_action_name
from tandem.lm_inside_agents.world_model import collect_text_transitions, load_world_model, saved_format, world_model_folder

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

    @staticmethod
    def prefetch(envs: list[ImaginedEnv], actions: list[str]) -> None:
        """Predict the coming steps of many imagined episodes in one batched decode per world model (the steps
        then read them from its cache), instead of one decode per episode."""
        by_model: dict[int, tuple] = {}
        for env, action in zip(envs, actions):
            index = parse_action_name(action, env.names)
            if index is not None:
                states, indices = by_model.setdefault(id(env.world_model), (env.world_model, [], []))[1:]
                states.append(env.state)
                indices.append(index)
        for world_model, states, indices in by_model.values():
            world_model.predict(states, indices)

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


@register_env_kind("worldmodel")
def _worldmodel_kind(spec: str, path: str | None, invalid, invalid_penalty: float, env: str | None = None,
                     size: int = 4, max_turns: int | None = None) -> EnvSuite:
    if not path:
        raise ValueError(f"{spec!r}: name the world-model run directory, e.g. worldmodel:runs/world-model")
    if env is not None and env not in REAL_ENVS:
        raise ValueError(f"{spec!r}: env must be one of {', '.join(REAL_ENVS)}")
    recorded = saved_format(world_model_folder(path)).get("env")
    real_spec = REAL_ENVS[env].format(size=size) if env else recorded or REAL_ENVS["frozenlake"].format(size=size)
    real = make_env_suite(real_spec, invalid=invalid, invalid_penalty=invalid_penalty)
    world_model = load_world_model(path, real.make("train").names)

    def make(split: str) -> TextEnv:
        return real.make("eval") if split == "eval" else ImaginedEnv(real.make("train"), world_model)

    return EnvSuite(spec, make, max_turns or real.max_turns)


# ---- `tandem world-model` on an agent's text env --------------------------------------------------------------
def collect_agent_transitions(config: WorldModelConfig, counts: dict) -> tuple[list, list[str]]:
    """Random-play transitions of the agent env `config.env` from its training split's start states (the held-out
    ones `agent-rl` scores on stay unseen), and its action names."""
    text_env = make_env_suite(config.env).make("train")
    names = list(getattr(text_env, "names", []) or [])
    return collect_text_transitions(text_env, config.episodes, seed=config.seed, progress=config.progress,
                                    counts=counts), names


def run_agent_world_model(config: WorldModelConfig) -> dict:
    """`tandem world-model` on any env: a toy-text one as `run_world_model`, an agent text env read here."""
    return run_world_model(config, None if is_toy_text(config.env) else collect_agent_transitions)


def register(add_command) -> None:
    def show(config: WorldModelConfig) -> None:
        run_agent_world_model(config)  # prints the held-out figures itself, before planning
        print(f"metrics in {config.out}/metrics.json")
        if not is_toy_text(config.env):
            print(f"train a policy in it: tandem agent-rl --env worldmodel:{config.out}")

    add_command("world-model", WorldModelConfig, show,
                "Train a tiny LM world model on text transitions (or fine-tune a pretrained --model) of FrozenLake, "
                "Taxi or an agent text env (babyai:GoToObj), report held-out exact match, plan and run Dyna in it.")
