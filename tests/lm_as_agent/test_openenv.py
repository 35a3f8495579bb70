"""The OpenEnv adapter on an environment written the OpenEnv way (pydantic Action/Observation, a generic
`Environment[Action, Observation, State]` base), defined here and imported by its dotted path."""

import textwrap

import pytest

from tandem.lm_as_agent.demonstrations import make_expert
from tandem.lm_as_agent.env import EVAL_SEED_OFFSET, make_env_suite

GUESS_ENV = textwrap.dedent('''
    from typing import Any, Generic, Optional, TypeVar

    from pydantic import BaseModel

    A, O, S = TypeVar("A"), TypeVar("O"), TypeVar("S")


    class Environment(Generic[A, O, S]):  # OpenEnv's base, reduced to its protocol
        pass


    class GuessAction(BaseModel):
        guess: str
        metadata: dict = {}


    class GuessObservation(BaseModel):
        hint: str
        done: bool = False
        reward: Optional[float] = None
        metadata: dict = {}


    class GuessEnvironment(Environment[GuessAction, GuessObservation, dict]):
        """Guess the secret number between 1 and 8."""

        closed = 0

        def reset(self, seed: Optional[int] = None, episode_id: Optional[str] = None, **kwargs: Any) -> GuessObservation:
            self.seed, self.secret, self.turns = seed, (seed or 0) % 8 + 1, 0
            return GuessObservation(hint="guess a number from 1 to 8")

        def step(self, action: GuessAction, timeout_s=None, **kwargs) -> GuessObservation:
            self.turns += 1
            guess = int(action.guess) if action.guess.isdigit() else 0
            if guess == self.secret:
                return GuessObservation(hint="right", done=True, reward=1.0)
            hint = "higher" if guess < self.secret else "lower"
            return GuessObservation(hint=hint, done=self.turns >= 4, reward=0.0)

        def close(self):
            GuessEnvironment.closed += 1
''')


@pytest.fixture
def guess_module(tmp_path, monkeypatch):
    (tmp_path / "guess_openenv.py").write_text(GUESS_ENV)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "guess_openenv.GuessEnvironment"


def binary_search(env) -> tuple[list[str], object]:
    low, high, replies = 1, 8, []
    while True:
        guess = (low + high) // 2
        replies.append(str(guess))
        result = env.step(f" {guess} ")
        if result.terminated:
            return replies, result
        low, high = (guess + 1, high) if result.observation == "higher" else (low, guess - 1)


def test_an_openenv_environment_is_played_to_the_end_with_text(guess_module):
    suite = make_env_suite(f"openenv:{guess_module}")
    env = suite.make("train")
    assert env.field == "guess" and env.action.__name__ == "GuessAction"  # from the generic base
    assert "Guess the secret number between 1 and 8" in env.instructions
    first = env.reset(seed=5)
    assert first == "guess a number from 1 to 8"  # the one field besides done/reward/metadata
    replies, result = binary_search(env)
    assert replies[-1] == "6" and result.reward == 1.0 and result.info["success"] is True
    env.reset(seed=5)
    lost = [env.step("1") for _ in range(4)]
    assert lost[-1].terminated and lost[-1].info["success"] is False and not any(r.terminated for r in lost[:3])
    held_out = suite.make("eval")
    held_out.reset(seed=5)
    assert held_out.env.seed == 5 + EVAL_SEED_OFFSET  # held-out episodes start from other seeds


def test_spec_options_and_clear_errors(guess_module):
    env = make_env_suite(f"openenv:{guess_module}:observation=hint:success=2:instructions=Find it").make("train")
    assert env.instructions == "Find it"
    env.reset(seed=0)
    assert env.step("1").info["success"] is False  # reward 1 is below success=2
    with pytest.raises(ValueError, match="no 'Missing'"):
        make_env_suite("openenv:guess_openenv.Missing")
    with pytest.raises(ValueError, match="cannot import"):
        make_env_suite("openenv:not_a_module_here.Env")
    with pytest.raises(ValueError, match="has no field 'answer'"):
        make_env_suite(f"openenv:{guess_module}:field=answer")


def test_a_users_environment_has_no_built_in_expert_and_says_what_to_give(guess_module):
    env = make_env_suite(f"openenv:{guess_module}").make("train")
    env.reset(seed=1)
    with pytest.raises(ValueError, match="--demonstrations FILE.jsonl"):
        make_expert(env)
