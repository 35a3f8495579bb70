"""PPO on Gymnasium vector envs: GAE with episode ends against a brute-force sum, and learning on CartPole / a toy."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal

from tandem.lm_inside_agents.ppo import (
    AgentPPOConfig,
    MLPActorCritic,
    env_actions,
    rollout_gae,
    summed_log_prob,
    train_ppo,
)
from tandem.algorithms.advantages import gae_advantages



def brute_force_gae(rewards, values, next_values, terminated, ended, gamma, lam):
    """A_t = sum_k (gamma lam)^k delta_{t+k}, summed until (and including) the step where the episode ends."""
    steps, envs = rewards.shape
    out = np.zeros((steps, envs))
    for n in range(envs):
        for t in range(steps):
            total, weight = 0.0, 1.0
            for k in range(t, steps):
                delta = rewards[k, n] + gamma * (1 - terminated[k, n]) * next_values[k, n] - values[k, n]
                total += weight * delta
                weight *= gamma * lam
                if ended[k, n]:
                    break
            out[t, n] = total
    return out


def test_rollout_gae_matches_brute_force_with_episode_ends():
    generator = torch.Generator().manual_seed(0)
    rewards, values, next_values = (torch.randn(9, 3, generator=generator, dtype=torch.float64) for _ in range(3))
    truncated = torch.zeros(9, 3, dtype=torch.bool)
    terminated = torch.zeros(9, 3, dtype=torch.bool)
    terminated[2, 0] = terminated[5, 1] = terminated[6, 0] = True
    truncated[4, 2] = truncated[7, 1] = True
    ended = terminated | truncated
    advantages, returns = rollout_gae(rewards, values, next_values, terminated, ended, gamma=0.9, lam=0.8)
    expected = brute_force_gae(*(x.numpy() for x in (rewards, values, next_values, terminated, ended)), 0.9, 0.8)
    np.testing.assert_allclose(advantages.numpy(), expected, atol=1e-12)
    torch.testing.assert_close(returns, advantages + values)


def test_rollout_gae_is_the_language_model_gae_for_one_episode_per_column():
    rewards, values = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    next_values = torch.cat([values[1:], torch.zeros(1, 2, dtype=torch.float64)])
    last = torch.zeros(6, 2, dtype=torch.bool)
    last[-1] = True
    advantages, _ = rollout_gae(rewards, values, next_values, last, last, gamma=0.97, lam=0.9)
    reference, _ = gae_advantages(rewards.T, values.T, torch.ones(2, 6), gamma=0.97, lam=0.9)
    torch.testing.assert_close(advantages, reference.T)


def test_truncation_bootstraps_and_termination_does_not():
    one = torch.ones(1, 1)
    term, trunc = torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, 1, dtype=torch.bool)
    a_trunc, _ = rollout_gae(one, 0.5 * one, 2.0 * one, trunc, ~trunc, gamma=0.9, lam=0.95)
    a_term, _ = rollout_gae(one, 0.5 * one, 2.0 * one, term, term, gamma=0.9, lam=0.95)
    assert a_trunc.item() == pytest.approx(1 + 0.9 * 2 - 0.5)
    assert a_term.item() == pytest.approx(1 - 0.5)


def test_normal_log_prob_is_summed_over_action_dimensions_and_box_actions_are_clipped():
    dist = Normal(torch.zeros(4, 3), torch.ones(4, 3))
    actions = torch.randn(4, 3)
    torch.testing.assert_close(summed_log_prob(dist, actions), dist.log_prob(actions).sum(-1))
    box = gym.spaces.Box(-1.0, 1.0, (3,))
    assert np.abs(env_actions(actions * 10, box)).max() <= 1.0
    assert env_actions(torch.tensor([1, 0]), gym.spaces.Discrete(2)).dtype == np.int64


def _cartpole(num_envs=4, **vector_kwargs):
    return gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="sync", vector_kwargs=vector_kwargs)


def test_bad_policy_output_and_disabled_autoreset_are_refused():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = MLPActorCritic(4, gym.spaces.Discrete(2))

        def forward(self, obs):
            dist, value = self.inner(obs)
            return dist, value.unsqueeze(-1)

    config = AgentPPOConfig(total_steps=16, num_steps=4, progress=False)
    with pytest.raises(ValueError, match="shape"):
        train_ppo(_cartpole(2), Flat(), config)
    disabled = _cartpole(2, autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    with pytest.raises(ValueError, match="autoreset"):
        train_ppo(disabled, MLPActorCritic(4, gym.spaces.Discrete(2)), config)


@pytest.mark.e2e
@pytest.mark.parametrize("mode", [gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP])
def test_ppo_learns_cartpole_well_above_random(mode):
    torch.manual_seed(0)
    envs = _cartpole(4, autoreset_mode=mode)
    policy = MLPActorCritic.for_env(envs)
    history = train_ppo(envs, policy, AgentPPOConfig(total_steps=30_000, seed=0, progress=False))
    first = np.mean([ret for _, ret, _ in history.episodes[:20]])
    assert first < 40  # a near-random policy balances ~22 steps
    assert history.mean_return(last=20) > 100, history.mean_return(last=20)
    assert history.records[-1]["env_steps"] == 30_000 // (4 * 128) * 4 * 128


class ReachTarget(gym.Env):
    """One-step continuous toy: observe a target x in [-1, 1] (as a dict), act a, reward -(a - x)^2."""

    observation_space = gym.spaces.Dict({"target": gym.spaces.Box(-1.0, 1.0, (1,), np.float32)})
    action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = self.np_random.uniform(-1, 1, size=(1,)).astype(np.float32)
        return {"target": self.target}, {}

    def step(self, action):
        return {"target": self.target}, -float((action[0] - self.target[0]) ** 2), True, False, {}


class DictPolicy(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = MLPActorCritic(1, ReachTarget.action_space, hidden=32)

    def forward(self, obs):
        return self.inner(obs["target"])


@pytest.mark.e2e
def test_ppo_learns_a_continuous_toy_task_with_dict_observations():
    torch.manual_seed(0)
    envs = gym.vector.SyncVectorEnv(
        [ReachTarget] * 8, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    config = AgentPPOConfig(total_steps=12_000, num_steps=16, lr=3e-3, ent_coef=0.0, update_epochs=8, progress=False)

    def obs_fn(raw):
        return {"target": torch.as_tensor(raw["target"], dtype=torch.float32)}

    history = train_ppo(envs, DictPolicy(), config, obs_fn=obs_fn)
    first = np.mean([ret for _, ret, _ in history.episodes[:200]])
    last = history.mean_return(last=200)
    assert first < -0.8  # N(0, 1) actions against U(-1, 1) targets: E[-(a - x)^2] = -4/3
    assert last > -0.25, last
