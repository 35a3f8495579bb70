"""Text renderers and action parsing for MiniGrid/BabyAI, FrozenLake and Taxi."""

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid/BabyAI envs)
import pytest
from minigrid.core.actions import Actions
from minigrid.wrappers import ImgObsWrapper

from tandem.lm_inside_agents.render import action_names, parse_action, render_minigrid_view, render_state


@pytest.fixture
def lake():
    env = gym.make("FrozenLake-v1", map_name="4x4", is_slippery=False)
    env.reset(seed=0)
    yield env
    env.close()


def test_frozen_lake_marks_agent_from_state(lake):
    text = render_state(lake, 6)  # row 1, column 2
    lines = text.splitlines()
    assert "you: row 1, column 2" in text
    grid = lines[-4:]
    assert grid[1][2] == "@"
    assert sum(line.count("@") for line in grid) == 1
    assert grid[0][0] == "S" and grid[3][3] == "G"
    # without obs it renders the env's own state (the start after reset)
    assert render_state(lake).splitlines()[-4][0] == "@"


def test_frozen_lake_shows_a_fall_into_a_hole(lake):
    lake.reset(seed=0)
    obs, _, terminated, *_ = lake.step(1)  # down from the start: the 4x4 map's hole at row 1, column 1 is not hit
    obs, _, terminated, *_ = lake.step(2)  # right, into the hole at row 1, column 1
    assert terminated
    grid = render_state(lake, obs).splitlines()[-4:]
    assert grid[1][1] == "X" and "@" not in "".join(grid)


def test_frozen_lake_follows_steps(lake):
    lake.reset(seed=0)
    obs, *_ = lake.step(2)  # right
    assert render_state(lake, obs) == render_state(lake)
    assert "you: row 0, column 1" in render_state(lake)


def test_taxi_decodes_state():
    env = gym.make("Taxi-v4")
    base = env.unwrapped
    state = base.encode(2, 3, 4, 1)  # taxi at (2, 3), passenger in the taxi, destination G
    text = render_state(env, state)
    assert "taxi: row 2, column 3; passenger: in the taxi; destination: G" in text
    map_lines = text.splitlines()[2:]
    assert map_lines[1 + 2][2 * 3 + 1] == "@"
    state = base.encode(0, 0, 2, 3)
    assert "passenger: at Y; destination: B" in render_state(env, state)
    assert action_names(env) == ["south", "north", "east", "west", "pickup", "dropoff"]


def test_minigrid_renders_full_state_and_mission():
    env = gym.make("BabyAI-GoToRedBall-v0")
    obs, _ = env.reset(seed=3)
    base = env.unwrapped
    text = render_state(env, obs)
    lines = text.splitlines()
    assert lines[0] == f"mission: {obs['mission']}"
    grid = [line.split(" ") for line in lines[3:]]
    assert len(grid) == base.height and all(len(row) == base.width for row in grid)
    x, y = base.agent_pos
    assert grid[y][x] == "@" + ">v<^"[base.agent_dir]
    assert all(cell == "##" for cell in grid[0])
    assert sum(row.count("Or") for row in grid) == 1  # exactly one red ball
    assert "carrying nothing" in lines[1]
    # deterministic; a wrapper does not change it; turning changes it
    assert render_state(ImgObsWrapper(env)) == text
    env.step(Actions.left)
    after = render_state(env)
    assert after != text and f"facing {['east', 'south', 'west', 'north'][base.agent_dir]}" in after


def test_minigrid_carried_object_and_front():
    env = gym.make("MiniGrid-Empty-5x5-v0")
    env.reset(seed=0)
    base = env.unwrapped
    from minigrid.core.world_object import Key

    base.carrying = Key("yellow")
    base.agent_pos, base.agent_dir = (1, 1), 0
    base.grid.set(2, 1, Key("red"))
    text = render_state(env)
    assert "carrying yellow key" in text
    assert "in front of you: red key" in text
    assert text.splitlines()[3 + 1].split(" ")[2] == "Kr"


def test_minigrid_egocentric_view():
    env = gym.make("BabyAI-GoToRedBall-v0")
    obs, _ = env.reset(seed=0)
    rows = render_minigrid_view(obs).splitlines()[1:]
    assert len(rows) == 7 and rows[6].split(" ")[3] == "@^"


def test_action_names_and_parse(lake):
    assert action_names(lake) == ["left", "down", "right", "up"]
    assert parse_action(lake, "I would go RIGHT.") == 2
    assert parse_action(lake, "go up, not left") == 3  # earliest name wins
    assert parse_action(lake, "1") == 1
    assert parse_action(lake, "action: 0") == 0
    assert parse_action(lake, "7") is None  # out of range
    assert parse_action(lake, "uphill") is None  # whole words only
    assert parse_action(lake, "no idea") is None
    babyai = gym.make("BabyAI-GoToRedBall-v0")
    assert action_names(babyai)[:3] == ["left", "right", "forward"]
    assert parse_action(babyai, "move forward") == 2
    assert parse_action(babyai, "pick up the ball") == 3
    taxi = gym.make("Taxi-v4")
    assert parse_action(taxi, "Drop off the passenger") == 5


def test_generic_env_fallback():
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    assert render_state(env, obs).startswith("observation: ")
    assert action_names(env) == ["0", "1"]
    assert parse_action(env, "1") == 1 and parse_action(env, "push") is None
    with pytest.raises(ValueError, match="no text renderer"):
        render_state(env)


def test_goal_text_and_parse_by_names(lake):
    from tandem.lm_inside_agents.render import goal_text, parse_action_name

    assert goal_text(render_state(lake)) == "walk from S to the goal G without stepping into a hole H"
    babyai = gym.make("BabyAI-GoToRedBall-v0")
    obs, _ = babyai.reset(seed=1)
    assert goal_text(render_state(babyai)) == obs["mission"]
    assert goal_text("observation: 1 2") == ""
    assert parse_action_name("then go north", ["south", "north"]) == 1


def _forward_and_right_by_walking(env, i, j):
    """Brute force: the agent's forward and right unit vectors from its direction, the offset projected on them."""
    x, y = env.agent_pos
    forward = env.dir_vec
    right = (-forward[1], forward[0])
    return (i - x) * forward[0] + (j - y) * forward[1], (i - x) * right[0] + (j - y) * right[1]


@pytest.mark.parametrize("seed", range(6))
def test_minigrid_relative_view_places_every_object_in_the_agents_frame(seed):
    from tandem.lm_inside_agents.render import relative_position, render_minigrid_relative

    env = gym.make("BabyAI-GoToLocal-v0")
    env.reset(seed=seed)
    base = env.unwrapped
    for action in (Actions.left, Actions.forward, Actions.right, Actions.forward):  # a few poses, all directions seen
        text = render_minigrid_relative(base)
        assert text.splitlines()[0] == f"mission: {base.mission}"
        objects = [(i, j) for i in range(base.width) for j in range(base.height)
                   if (o := base.grid.get(i, j)) is not None and o.type != "wall"]
        assert len(text.splitlines()) == 4 + len(objects)
        for i, j in objects:
            assert relative_position(base, i, j) == _forward_and_right_by_walking(base, i, j)
        # the free steps ahead: walking that many steps forward stays on open floor, one more is blocked
        free = int(text.splitlines()[3].rsplit(" ", 1)[1])
        fx, fy = base.dir_vec
        x, y = base.agent_pos
        assert all(base.grid.get(x + fx * k, y + fy * k) is None for k in range(1, free + 1))
        assert base.grid.get(x + fx * (free + 1), y + fy * (free + 1)) is not None
        env.step(action)
    env.close()


def test_minigrid_relative_view_words_the_offsets():
    from tandem.lm_inside_agents.render import _where

    assert _where(2, -1) == "2 steps ahead and 1 step to your left"
    assert _where(-1, 3) == "1 step behind and 3 steps to your right"
    assert _where(1, 0) == "1 step ahead"
