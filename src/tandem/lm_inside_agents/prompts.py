"""The text formats language models see in agents: one prompt per question, shared by every backend
(`tandem.lm_inside_agents.backends`), the demonstration data, and the LM world model (`tandem.lm_inside_agents.world_model`).

A model fine-tuned on one of these formats is asked the same way it was trained: the world model learns
``transition_prompt -> transition_completion`` and `HFBackend.predict_next_state` asks with `transition_prompt`
and reads the answer with `parse_transition`.

Transitions as text (RAP, Hao et al. 2023)::

    state:
    <render_state(env) before the step>
    action: right
    next state:
    <render_state(env) after the step>
    reward: 0
    done: no
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REWARD_PREFIX = "reward: "
DONE_PREFIX = "done: "


class TransitionParseError(ValueError):
    """Generated text that is not `<next state>\\nreward: <number>\\ndone: yes|no`."""


# ---- which action -------------------------------------------------------------------------------------------
def action_prompt(env_text: str, names: Sequence[str]) -> str:
    """Prompt whose continuation (`action_completion`) is the action to take."""
    return f"{env_text}\nactions: {', '.join(names)}\naction:"


def action_completion(name: str) -> str:
    return f" {name}"


# ---- what happens next (the world model) --------------------------------------------------------------------
def transition_prompt(state: str, action: str) -> str:
    """Prompt whose continuation (`transition_completion`) is the next state, the reward and the done flag."""
    return f"state:\n{state}\naction: {action}\nnext state:\n"


def format_reward(reward: float) -> str:
    """Shortest exact text of a reward (`1`, `-10`, `0.5`), so equal rewards are equal strings."""
    return f"{float(reward):g}"


def transition_completion(next_state: str, reward: float, done: bool) -> str:
    return f"{next_state}\n{REWARD_PREFIX}{format_reward(reward)}\n{DONE_PREFIX}{'yes' if done else 'no'}"


def parse_transition(text: str) -> tuple[str, float, bool]:
    """(next_state, reward, done) from a completion; raises `TransitionParseError` naming what is wrong."""
    lines = text.strip("\n").split("\n")
    if len(lines) < 3:
        raise TransitionParseError(f"expected a state, a reward line and a done line, got {len(lines)} line(s): {text!r}")
    *state_lines, reward_line, done_line = lines
    if not reward_line.startswith(REWARD_PREFIX):
        raise TransitionParseError(f"second-to-last line should start with {REWARD_PREFIX!r}: {reward_line!r}")
    try:
        reward = float(reward_line[len(REWARD_PREFIX):])
    except ValueError:
        raise TransitionParseError(f"reward is not a number: {reward_line!r}") from None
    if not np.isfinite(reward):
        raise TransitionParseError(f"reward is not finite: {reward_line!r}")
    done_text = done_line.strip()
    if done_text not in (DONE_PREFIX + "yes", DONE_PREFIX + "no"):
        raise TransitionParseError(f"last line should be 'done: yes' or 'done: no': {done_line!r}")
    return "\n".join(state_lines), reward, done_text.endswith("yes")


def next_state_text(completion: str) -> str:
    """The next-state part of a transition completion: the reward and done lines dropped when present."""
    try:
        return parse_transition(completion)[0]
    except TransitionParseError:
        return completion.strip("\n")


# ---- how far along -------------------------------------------------------------------------------------------
def progress_prompt(state_text: str, goal_text: str) -> str:
    """Prompt whose continuation (`progress_completion`) is one digit, 0 (no progress) to 9 (goal reached)."""
    return f"{state_text}\ngoal: {goal_text}\nprogress from 0 to 9:"


def progress_completion(digit: int) -> str:
    return f" {digit}"
