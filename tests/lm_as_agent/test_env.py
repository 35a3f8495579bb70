"""The environment layer: any Gymnasium id, renderings, invalid actions, held-out starts, single-turn tasks."""

import gymnasium as gym
import numpy as np
import pytest

from tandem.lm_as_agent.env import (
    EVAL_SEED_OFFSET, Corridor, GymTextEnv, check_env_spec, make_env_suite, render_space,
)


@pytest.mark.parametrize("spec", ["CliffWalking-v1", "gym:Taxi-v4", "Blackjack-v1", "CartPole-v1", "BabyAI-GoToObj-v0",
                                  "babyai:GoToRedBall", "frozenlake:size=4", "frozenlake:maps=fixed:size=8"])
def test_any_discrete_gymnasium_id_is_a_text_env(spec):
    suite = make_env_suite(spec)
    env = suite.make("train")
    first = env.reset(seed=1)
    assert isinstance(first, str) and first.strip()
    assert "reply with exactly one action from" in env.instructions
    name = env.names[0]
    result = env.step(f"I choose {name}.")
    assert result.info["invalid_action"] is False and result.info["action"] == name
    assert env.reset(seed=1) == first  # the start state is a function of the seed


def test_cliffwalking_uses_the_envs_own_text_rendering():
    env = make_env_suite("CliffWalking-v1").make()
    text = env.reset(seed=0)
    assert "C" in text and "T" in text and "\x1b" not in text  # cliff, target; colour codes stripped
    assert env.names == ["up", "right", "down", "left"]
    result = env.step("up")
    assert result.reward == -1 and not result.terminated


def test_unknown_ids_and_continuous_actions_are_clear_errors():
    with pytest.raises(ValueError, match="unknown Gymnasium id 'CliffWalkin-v9'"):
        make_env_suite("CliffWalkin-v9")
    with pytest.raises(ValueError, match="unknown environment 'nosuchkind'"):
        make_env_suite("nosuchkind")
    with pytest.raises(ValueError, match="unknown environment"):
        check_env_spec("nosuchkind:x=1")
    with pytest.raises(ValueError, match="Discrete action space"):
        make_env_suite("Pendulum-v1").make()


def test_generic_rendering_of_spaces():
    assert render_space(gym.spaces.Discrete(5), 3) == "state 3 (of 5)"
    assert render_space(gym.spaces.Box(-1, 1, (3,)), np.array([0.5, -0.25, 1 / 3])) == "0.5 -0.25 0.333"
    assert render_space(gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.MultiBinary(2))), (1, np.array([0, 1]))) \
        == "state 1 (of 2); 0 1"
    space = gym.spaces.Dict({"a": gym.spaces.Discrete(3), "b": gym.spaces.Box(0, 9, (2,), dtype=np.int64)})
    assert render_space(space, {"a": 2, "b": np.array([4, 5])}) == "a: state 2 (of 3); b: 4 5"
    with pytest.raises(ValueError, match="too large"):
        render_space(gym.spaces.Box(0, 1, (100,)), np.zeros(100))


@pytest.mark.parametrize("mode, reward, ends", [("penalty", -0.5, False), ("retry", 0.0, False), ("end", -0.5, True)])
def test_invalid_actions_are_handled_as_configured(mode, reward, ends):
    env = GymTextEnv(gym.make("FrozenLake-v1", is_slippery=False), invalid=mode, invalid_penalty=-0.5)
    before = env.reset(seed=0)
    result = env.step("jump over the lake")
    assert result.info["invalid_action"] and result.reward == reward and result.terminated == ends
    assert "not an action" in result.observation and before in result.observation  # the state is shown again
    assert env.env.unwrapped.s == 0  # an invalid reply never steps the environment
    if ends:
        assert result.info["success"] is False


def test_frozenlake_success_and_held_out_maps():
    suite = make_env_suite("frozenlake:maps=fixed:size=4")
    env = suite.make()
    env.reset(seed=0)
    for action in ["right", "right", "down", "down", "down", "right"]:
        result = env.step(action)
    assert result.terminated and result.reward == 1 and result.info["success"]
    random_maps = make_env_suite("frozenlake:size=4")
    train, held_out = random_maps.make("train"), random_maps.make("eval")
    train_maps = {train.reset(seed=s) for s in range(20)}
    assert len(train_maps) > 10  # a map per seed
    assert held_out.seed_offset == EVAL_SEED_OFFSET and held_out.reset(seed=3) == train.reset(seed=3 + EVAL_SEED_OFFSET)


def test_corridor_and_task_env():
    env = Corridor(2)
    assert env.reset() == "@.G"
    assert env.step("right").reward == 0 and env.step("go right").info["success"]
    suite = make_env_suite("task:arithmetic:digits=1:operations=+")
    task_env = suite.make("train")
    question = task_env.reset(seed=4)
    a, b = (int(x) for x in question.split("What is ")[1].split("?")[0].split(" + "))
    assert task_env.step(f"The answer is {a + b}").reward == 1.0
    task_env.reset(seed=4)
    result = task_env.step("no idea")
    assert suite.max_turns == 1 and result.terminated and result.reward == 0.0 and not result.info["success"]
    held_out = {suite.make("eval").reset(seed=s) for s in range(20)}
    assert not held_out & {task_env.reset(seed=s) for s in range(200)}  # eval problems are not training problems


def test_explore_and_shape_take_any_discrete_gymnasium_id():
    from tandem.lm_inside_agents.experiments.explore import task_env_factory

    env = task_env_factory("CliffWalking-v1")()
    assert env.action_space.n == 4
    assert task_env_factory("frozenlake4x4")().unwrapped.desc.shape == (4, 4)
    with pytest.raises(ValueError, match="registered Gymnasium id"):
        task_env_factory("CliffWalkin-v9")
    with pytest.raises(ValueError, match="Discrete action space"):
        task_env_factory("Pendulum-v1")


def test_babyai_reads_in_the_agents_frame_by_default_and_as_a_grid_when_asked():
    relative = make_env_suite("babyai:GoToObj").make("train")
    grid = make_env_suite("babyai:GoToObj:view=grid").make("train")
    text, grid_text = relative.reset(seed=3), grid.reset(seed=3)
    assert "step" in text and "##" not in text and "legend" not in relative.instructions
    assert "##" in grid_text and "legend" in grid.instructions
    assert text.splitlines()[0] == grid_text.splitlines()[0]  # the same mission
    with pytest.raises(ValueError, match="view"):
        make_env_suite("babyai:GoToObj:view=sideways").make("train")
