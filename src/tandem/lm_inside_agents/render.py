"""Text renderings of environment states, so a language model can read them.

Supported: MiniGrid / BabyAI (the full grid of the unwrapped env, the agent's position, direction, carried object and
the mission), FrozenLake and Taxi (toy-text, from the integer state). Any other env with a discrete action space falls
back to ``observation: <values>`` and numeric action names. Renderings are deterministic functions of the state, so
they can serve as cache keys and as exact-match targets for a world model.

MiniGrid cells are two characters: ``..`` empty, ``##`` wall, ``~~`` lava, ``@>`` ``@v`` ``@<`` ``@^`` the agent, and
otherwise an object letter followed by a colour letter (see `MINIGRID_LEGEND`, which prompts for general-purpose
language models may prepend).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv
from gymnasium.envs.toy_text.taxi import TaxiEnv
from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT
from minigrid.minigrid_env import MiniGridEnv

MINIGRID_LEGEND = (
    "legend: each cell is 2 characters; .. empty, ## wall, ~~ lava, @> @v @< @^ you facing east/south/west/north; "
    "other cells are an object letter (K key, O ball, B box, G goal, F floor, D closed door, d open door, "
    "L locked door) followed by a colour letter (r red, g green, b blue, p purple, y yellow, e grey)"
)

_OBJECT_LETTER = {"key": "K", "ball": "O", "box": "B", "goal": "G", "floor": "F", "door": "D"}
_COLOR_LETTER = {"red": "r", "green": "g", "blue": "b", "purple": "p", "yellow": "y", "grey": "e"}
_DIRECTION_NAME = ("east", "south", "west", "north")
_DIRECTION_MARK = (">", "v", "<", "^")
_DIRECTION_VEC = ((1, 0), (0, 1), (-1, 0), (0, -1))

FROZEN_LAKE_ACTIONS = ["left", "down", "right", "up"]
TAXI_ACTIONS = ["south", "north", "east", "west", "pickup", "dropoff"]
_TAXI_PLACE = ("R", "G", "Y", "B")  # names of Taxi's four landmark squares, in `locs` order


def _cell_code(obj_type: str, color: str, door_state: str | None = None) -> str:
    """Two-character code of one MiniGrid cell (`MINIGRID_LEGEND`)."""
    if obj_type in ("empty", "unseen"):
        return ".." if obj_type == "empty" else "??"
    if obj_type == "wall":
        return "##"
    if obj_type == "lava":
        return "~~"
    letter = _OBJECT_LETTER.get(obj_type, "?")
    if obj_type == "door":
        letter = {"open": "d", "closed": "D", "locked": "L"}[door_state or "closed"]
    return letter + _COLOR_LETTER.get(color, "?")


def _object_code(obj: Any) -> str:
    if obj is None:
        return ".."
    state = None
    if obj.type == "door":
        state = "locked" if obj.is_locked else ("open" if obj.is_open else "closed")
    return _cell_code(obj.type, obj.color, state)


def _describe(obj: Any) -> str:
    """``red ball`` / ``open blue door`` / ``nothing``."""
    if obj is None:
        return "nothing"
    if obj.type == "wall":
        return "wall"
    if obj.type == "door":
        state = "locked" if obj.is_locked else ("open" if obj.is_open else "closed")
        return f"{state} {obj.color} door"
    return f"{obj.color} {obj.type}"


def render_minigrid(env: MiniGridEnv) -> str:
    """The whole MiniGrid/BabyAI state as text: mission, agent pose, carried object, cell in front, and the grid."""
    if env.agent_pos is None or env.grid is None:
        raise ValueError("the MiniGrid env has not been reset, so it has no state to render")
    x, y = (int(v) for v in env.agent_pos)
    d = int(env.agent_dir)
    dx, dy = _DIRECTION_VEC[d]
    front = env.grid.get(x + dx, y + dy) if 0 <= x + dx < env.width and 0 <= y + dy < env.height else None
    rows = []
    for j in range(env.height):
        cells = ["@" + _DIRECTION_MARK[d] if (i, j) == (x, y) else _object_code(env.grid.get(i, j)) for i in range(env.width)]
        rows.append(" ".join(cells))
    header = [
        f"mission: {env.mission}",
        f"you: column {x}, row {y}, facing {_DIRECTION_NAME[d]}, carrying {_describe(env.carrying)}",
        f"in front of you: {_describe(front)}",
    ]
    return "\n".join(header + rows)


def _steps(n: int, word: str) -> str:
    return f"{n} step{'s' if n != 1 else ''} {word}"


def relative_position(env: MiniGridEnv, i: int, j: int) -> tuple[int, int]:
    """Cell (i, j) in the agent's frame: (steps forward, steps to the right); negative is behind / to the left."""
    x, y = (int(v) for v in env.agent_pos)
    d = int(env.agent_dir)
    fx, fy = _DIRECTION_VEC[d]
    rx, ry = _DIRECTION_VEC[(d + 1) % 4]  # y grows downward, so turning right is the next direction
    return (i - x) * fx + (j - y) * fy, (i - x) * rx + (j - y) * ry


def _where(forward: int, right: int) -> str:
    parts = []
    if forward:
        parts.append(_steps(abs(forward), "ahead" if forward > 0 else "behind"))
    if right:
        parts.append(_steps(abs(right), "to your right" if right > 0 else "to your left"))
    return " and ".join(parts) or "here"


def render_minigrid_relative(env: MiniGridEnv) -> str:
    """The MiniGrid/BabyAI state in the agent's own frame, as a sentence per object.

    Every object that is not a wall (whole grid: full observability) is placed by steps ahead/behind and to the
    left/right of the agent, nearest first, and the walls are given as the free steps before the wall ahead. The
    egocentric text of BabyAI-Text (Carta et al., 2023, "Grounding Large Language Models in Interactive
    Environments with Online RL") over the full grid: a small model reads "2 steps ahead and 1 step to your
    left" far more easily than it finds itself and the target in a character grid.
    """
    if env.agent_pos is None or env.grid is None:
        raise ValueError("the MiniGrid env has not been reset, so it has no state to render")
    x, y = (int(v) for v in env.agent_pos)
    dx, dy = _DIRECTION_VEC[int(env.agent_dir)]
    free = 0
    while free < max(env.width, env.height):
        i, j = x + dx * (free + 1), y + dy * (free + 1)
        cell = env.grid.get(i, j) if 0 <= i < env.width and 0 <= j < env.height else None
        if not (0 <= i < env.width and 0 <= j < env.height) or (cell is not None and not cell.can_overlap()):
            break
        free += 1
    front = env.grid.get(x + dx, y + dy)
    seen = []
    for j in range(env.height):
        for i in range(env.width):
            obj = env.grid.get(i, j)
            if obj is not None and obj.type != "wall" and (i, j) != (x, y):
                forward, right = relative_position(env, i, j)
                seen.append((abs(forward) + abs(right), forward, right, _describe(obj)))
    lines = [f"mission: {env.mission}", f"carrying: {_describe(env.carrying)}",
             f"in front of you: {_describe(front)}", f"free steps ahead before a wall or object: {free}"]
    lines += [f"{name}: {_where(forward, right)}" for _, forward, right, name in sorted(seen)]
    return "\n".join(lines)


def render_minigrid_view(obs: dict) -> str:
    """The agent's egocentric partial view (``obs["image"]``, agent at the bottom centre facing up) as text."""
    image = np.asarray(obs["image"])
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a MiniGrid image observation of shape (w, h, 3), got {image.shape}")
    width, height = image.shape[:2]
    state_names = {0: "open", 1: "closed", 2: "locked"}
    rows = []
    for j in range(height):
        cells = []
        for i in range(width):
            obj_idx, color_idx, state_idx = (int(v) for v in image[i, j])
            if (i, j) == (width // 2, height - 1):
                cells.append("@^")
            else:
                cells.append(_cell_code(IDX_TO_OBJECT[obj_idx], IDX_TO_COLOR.get(color_idx, "?"), state_names.get(state_idx)))
        rows.append(" ".join(cells))
    mission = obs.get("mission")
    return "\n".join(([f"mission: {mission}"] if mission is not None else []) + rows)


def _toy_text_state(env: Any, obs: Any) -> int:
    return int(env.s if obs is None else np.asarray(obs).item())


def render_frozen_lake(env: FrozenLakeEnv, obs: Any = None) -> str:
    """FrozenLake map with the agent as ``@`` (S start, F frozen, H hole, G goal), or ``X`` once it has fallen into a
    hole: with ``@`` there the hole under the agent vanished from the text, so a lost state read like a live one."""
    state = _toy_text_state(env, obs)
    row, col = divmod(state, env.ncol)
    grid = [[c.decode() for c in line] for line in env.desc]
    grid[row][col] = "X" if grid[row][col] == "H" else "@"
    header = [
        "task: walk from S to the goal G without stepping into a hole H",
        f"you: row {row}, column {col}",
    ]
    return "\n".join(header + ["".join(line) for line in grid])


def render_taxi(env: TaxiEnv, obs: Any = None) -> str:
    """Taxi map with the taxi as ``@``; passenger and destination named by landmark (R, G, Y, B)."""
    taxi_row, taxi_col, passenger, destination = env.decode(_toy_text_state(env, obs))
    grid = [[c.decode() if isinstance(c, bytes) else str(c) for c in line] for line in env.desc]
    grid[1 + taxi_row][2 * taxi_col + 1] = "@"
    where = "in the taxi" if passenger == 4 else f"at {_TAXI_PLACE[passenger]}"
    header = [
        "task: pick up the passenger and drop them off at the destination",
        f"taxi: row {taxi_row}, column {taxi_col}; passenger: {where}; destination: {_TAXI_PLACE[destination]}",
    ]
    return "\n".join(header + ["".join(line) for line in grid])


def _render_generic(env: Any, obs: Any) -> str:
    if obs is None:
        raise ValueError(f"no text renderer for {type(env).__name__}: pass the observation to render it generically")
    values = np.round(np.asarray(obs, dtype=np.float64).ravel(), 3)
    return "observation: " + " ".join(f"{v:g}" for v in values)


_RENDERERS: dict[type, Callable[[Any, Any], str]] = {
    MiniGridEnv: lambda env, obs: render_minigrid(env),
    FrozenLakeEnv: render_frozen_lake,
    TaxiEnv: render_taxi,
}

_ACTION_NAMES: dict[type, Callable[[Any], list[str]]] = {
    MiniGridEnv: lambda env: [a.name for a in env.actions],
    FrozenLakeEnv: lambda env: list(FROZEN_LAKE_ACTIONS),
    TaxiEnv: lambda env: list(TAXI_ACTIONS),
}


def has_renderer(env: Any) -> bool:
    """Whether `env` (its unwrapped class) has a hand-written renderer here."""
    return _lookup(_RENDERERS, env) is not None


def _lookup(table: dict[type, Any], env: Any) -> Any | None:
    for cls, fn in table.items():
        if isinstance(env, cls):
            return fn
    return None


def render_state(env: Any, obs: Any = None) -> str:
    """Text rendering of the current state of `env` (any wrapper; the unwrapped env is read).

    MiniGrid/BabyAI render the full state from the unwrapped env (`obs` is not needed); FrozenLake and Taxi render
    `obs` (the integer state) or, when it is None, the env's current state. Other envs render `obs` generically.
    """
    base = env.unwrapped
    renderer = _lookup(_RENDERERS, base)
    return renderer(base, obs) if renderer is not None else _render_generic(base, obs)


def goal_text(state_text: str) -> str:
    """The task named in a rendering: the MiniGrid/BabyAI mission, the toy-text task, or "" for other envs."""
    first = state_text.split("\n", 1)[0]
    for prefix in ("mission: ", "task: "):
        if first.startswith(prefix):
            return first[len(prefix):]
    return ""


def action_names(env: Any) -> list[str]:
    """Names of the env's discrete actions, indexed by action id (numbers as names for unknown envs)."""
    base = env.unwrapped
    n = getattr(env.action_space, "n", None)
    if n is None:
        raise ValueError(f"{type(base).__name__} has a non-discrete action space {env.action_space}")
    names_fn = _lookup(_ACTION_NAMES, base)
    names = names_fn(base) if names_fn is not None else [str(i) for i in range(int(n))]
    return names[: int(n)]


_JOINED_WORDS = re.compile(r"\b(pick|drop)[\s_-]+(up|off)\b")
_ACTION_INDEX = re.compile(r"\baction\s*(?:id|index|number)?\s*[:=#]?\s*(\d+)\b")


def parse_action(env: Any, text: str) -> int | None:
    """Action id of `env` named in free `text` (see `parse_action_name`), or None when none can be read."""
    return parse_action_name(text, action_names(env))


def parse_action_name(text: str, names: list[str]) -> int | None:
    """Index in `names` of the action named in free `text`, or None when none can be read.

    The earliest action name in the text wins (``"turn left, not right"`` -> left); a bare integer or
    ``action: 2`` is read as an index when it is in range. Case and ``pick up``/``pickup`` spelling are ignored.
    """
    lowered = _JOINED_WORDS.sub(r"\1\2", text.lower())
    stripped = lowered.strip().strip(".!\"'`")
    if stripped.isdigit():
        return int(stripped) if int(stripped) < len(names) else None
    if not all(name.isdigit() for name in names):
        hits = []
        for action_id, name in enumerate(names):
            match = re.search(rf"(?<![a-z0-9_]){re.escape(name.lower())}(?![a-z0-9_])", lowered)
            if match:
                hits.append((match.start(), -len(name), action_id))
        if hits:
            return min(hits)[2]
    match = _ACTION_INDEX.search(lowered)
    if match and int(match.group(1)) < len(names):
        return int(match.group(1))
    return None
