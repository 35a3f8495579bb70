"""TextArena and TextWorld games as text envs: scripted play to a win, determinism, invalid moves."""

import random

import numpy as np
import pytest

from tandem.lm_as_agent.env import EVAL_SEED_OFFSET, make_env_suite

pytest.importorskip("textarena")

HANOI_3 = ["A C", "A B", "C B", "A C", "B A", "B C", "A C"]


def play_guess_the_number(env, seed):
    """Binary search on the game's hints; returns the last step and the guesses."""
    env.reset(seed=seed)
    low, high, guesses = 1, 20, []
    while True:
        guess = (low + high) // 2
        guesses.append(guess)
        result = env.step(f"My guess: [{guess}]")
        if result.terminated:
            return result, guesses
        low, high = (guess + 1, high) if "higher" in result.observation else (low, guess - 1)


def test_guess_the_number_is_won_by_binary_search_and_is_deterministic():
    suite = make_env_suite("textarena:GuessTheNumber-v0")
    assert suite.max_turns == 11  # the game's own limit, as TextArena counts it (10 + 1)
    env = suite.make("train")
    assert "Guess The Number" in env.reset(seed=3) and "[5]" in env.reset(seed=3)
    result, guesses = play_guess_the_number(env, seed=3)
    assert result.reward == 1.0 and result.info["success"] and "Congratulations" in result.observation
    assert play_guess_the_number(suite.make("train"), seed=3)[1] == guesses  # same seed, same number
    numbers = {play_guess_the_number(env, seed)[1][-1] for seed in range(8)}
    assert len(numbers) > 2  # different seeds, different numbers


def test_a_game_leaves_the_process_random_generators_alone():
    env = make_env_suite("textarena:GuessTheNumber-v0").make()
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    env.reset(seed=7)
    env.step("[10]")
    assert (random.random(), np.random.rand()) == expected


def test_held_out_games_use_seeds_offset_from_training():
    suite = make_env_suite("textarena:GuessTheNumber-v0")
    train, held_out = suite.make("train"), suite.make("eval")
    assert held_out.seed_offset == EVAL_SEED_OFFSET and train.seed_offset == 0
    assert play_guess_the_number(held_out, 0)[1] == play_guess_the_number(train, EVAL_SEED_OFFSET)[1]


def test_tower_of_hanoi_is_solved_by_the_optimal_moves():
    env = make_env_suite("textarena:TowerOfHanoi-v0").make()
    first = env.reset(seed=0)
    assert "Tower of Hanoi" in first and "A: [3, 2, 1]" in first
    for move in HANOI_3[:-1]:
        result = env.step(move)  # brackets added, as TextArena's default wrapper does
        assert (result.reward, result.terminated, result.info["invalid_action"]) == (0.0, False, False)
    result = env.step(f"[{HANOI_3[-1]}]")
    assert result.terminated and result.reward == 1.0 and result.info["success"] and "C: [3, 2, 1]" in result.observation


def test_invalid_moves_are_counted_and_handled_as_configured():
    env = make_env_suite("textarena:TowerOfHanoi-v0").make()
    env.reset(seed=0)
    result = env.step("I am not sure what to do")
    assert result.info["invalid_action"] and result.reward == -0.1 and not result.terminated
    assert "invalid move" in result.observation
    assert env.step("[A C]").info["invalid_action"] is False  # a valid move after it

    ended = make_env_suite("textarena:TowerOfHanoi-v0", invalid="end").make()
    ended.reset(seed=0)
    result = ended.step("nonsense")
    assert result.terminated and result.info == {"invalid_action": True, "success": False}


def test_a_lost_game_ends_without_success():
    env = make_env_suite("textarena:GuessTheNumber-v0").make()
    env.reset(seed=3)
    target = play_guess_the_number(make_env_suite("textarena:GuessTheNumber-v0").make(), 3)[1][-1]
    wrong = [n for n in range(1, 21) if n != target][:11]
    for turn, guess in enumerate(wrong):
        result = env.step(f"[{guess}]")
        assert result.terminated == (turn == 10)
    assert result.terminated and not result.info["success"] and result.reward < 1.0


def test_unknown_games_are_named_with_similar_ones():
    with pytest.raises(ValueError, match="unknown TextArena game 'TowerOfHanoi-v9'; similar: TowerOfHanoi-v0"):
        make_env_suite("textarena:TowerOfHanoi-v9")
    with pytest.raises(ValueError, match="name the game"):
        make_env_suite("textarena")


# ---- TextWorld ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def textworld_cache(tmp_path_factory):
    pytest.importorskip("textworld")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TANDEM_CACHE", str(tmp_path_factory.mktemp("tandem-cache")))
        yield


def test_a_generated_textworld_game_is_won_by_its_walkthrough(textworld_cache):
    suite = make_env_suite("textworld:rooms=2:objects=3:quest_length=2")
    assert suite.max_turns == 8
    env = suite.make("train")
    first = env.reset(seed=5)
    assert "-= " in first and "Commands you can use:" in first and "TEXT" not in first  # no banner
    walkthrough = env.walkthrough
    assert 1 <= len(walkthrough) <= 4
    wandering = env.step("Action: dance wildly")
    assert wandering.info["invalid_action"] and wandering.reward == -0.1 and not wandering.terminated
    total = 0.0
    for command in walkthrough:
        result = env.step(command)
        total += result.reward
    assert result.terminated and result.info["success"] and total >= 1.0
    assert "The End" in result.observation and "RESTART" not in result.observation
    env.close()


def test_textworld_games_are_cached_deterministic_and_held_out(textworld_cache):
    from tandem.lm_as_agent.textgames import make_textworld_game, textworld_cache_dir

    suite = make_env_suite("textworld:rooms=2:objects=3:quest_length=2:commands=false")
    train = suite.make("train")
    first = train.reset(seed=5)
    assert "Commands you can use" not in first
    again = suite.make("train")
    assert again.reset(seed=5) == first and again.walkthrough == train.walkthrough
    assert make_textworld_game(5, 2, 3, 2) == train.game_file(5) and train.game_file(5).parent.parent == textworld_cache_dir()
    held_out = suite.make("eval")
    assert held_out.game_file(5).name == f"seed{5 + EVAL_SEED_OFFSET}.z8"
    pooled = make_env_suite("textworld:rooms=2:objects=3:quest_length=2:games=3").make("train")
    assert pooled.game_file(8) == pooled.game_file(2)
