"""The one episode evaluator: results depend on the reset seeds only, steps are capped, stateful actors are told."""

import gymnasium as gym
import numpy as np

from tandem.lm_inside_agents.evaluation import play_episodes


def balance(live, observations):
    """A deterministic CartPole controller: push towards the side the pole leans to."""
    return [int(o[2] + 0.5 * o[3] > 0) for o in observations]


def test_outcomes_depend_on_the_seeds_not_on_how_many_envs_play():
    alone = play_episodes([gym.make("CartPole-v1")], balance, 7, reset_seed=lambda k: 100 + k)
    together = play_episodes([gym.make("CartPole-v1") for _ in range(3)], balance, 7, reset_seed=lambda k: 100 + k)
    assert len(alone) == len(together) == 7
    assert sorted(o.ret for o in alone) == sorted(o.ret for o in together)
    for o in alone:  # brute force: replay each seed by hand
        assert o.ret == o.steps and o.last_reward == 1.0
    env = gym.make("CartPole-v1")
    by_hand = []
    for k in range(7):
        obs, _ = env.reset(seed=100 + k)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(balance([0], [obs])[0])
            total, done = total + reward, terminated or truncated
        by_hand.append(total)
    assert [o.ret for o in alone] == by_hand


def test_max_steps_ends_an_episode_that_never_terminates():
    lake = gym.make("FrozenLake-v1", map_name="4x4", is_slippery=False)
    outcomes = play_episodes([lake], lambda live, obs: [0] * len(live), 3, reset_seed=lambda k: k, max_steps=5)
    assert [(o.ret, o.steps, o.terminated) for o in outcomes] == [(0.0, 5, False)] * 3  # "left" at the start stays


class Counting:
    def __init__(self):
        self.starts, self.steps, self.ends = [], 0, 0

    def start(self, env, observation):
        self.starts.append(env)

    def act(self, envs, observations):
        return balance(envs, observations)

    def record(self, env, action, reward, observation, ended):
        self.steps += 1
        self.ends += ended


def test_an_episode_actor_is_told_every_start_and_step():
    actor = Counting()
    outcomes = play_episodes([gym.make("CartPole-v1") for _ in range(2)], actor, 5, reset_seed=lambda k: k)
    assert len(actor.starts) == 5 and set(actor.starts) == {0, 1}
    assert actor.steps == sum(o.steps for o in outcomes) and actor.ends == 5
    assert np.isfinite([o.ret for o in outcomes]).all()
