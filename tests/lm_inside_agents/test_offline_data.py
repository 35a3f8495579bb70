"""Offline datasets: return-to-go against a brute-force loop, the on-disk format and its errors, collection."""

import json

import gymnasium as gym
import numpy as np
import pytest

from tandem.lm_inside_agents.episodes import random_actor, run_episodes, vector_env_by_id
from tandem.lm_inside_agents.offline_collect import CollectConfig, collect_offline_dataset, parse_mix
from tandem.lm_inside_agents.offline_data import OfflineDataset, episode_bounds, load_offline_dataset, normalised_score, returns_to_go
from tandem.data import DataError



def brute_force_rtg(rewards, episode_ids, gamma):
    out = []
    for t in range(len(rewards)):
        total, k = 0.0, t
        while k < len(rewards) and episode_ids[k] == episode_ids[t]:
            total += gamma ** (k - t) * rewards[k]
            k += 1
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.0])
def test_returns_to_go_matches_brute_force_across_episode_boundaries(gamma):
    rng = np.random.default_rng(0)
    episode_ids = np.repeat(np.arange(5), [3, 1, 7, 2, 4])
    rewards = rng.normal(size=len(episode_ids))
    np.testing.assert_allclose(returns_to_go(rewards, episode_ids, gamma), brute_force_rtg(rewards, episode_ids, gamma))


def test_returns_to_go_of_an_episode_starts_at_its_return_and_ends_at_its_last_reward():
    rtg = returns_to_go(np.array([1.0, 2.0, 3.0, 10.0, 20.0]), np.array([0, 0, 0, 1, 1]))
    np.testing.assert_allclose(rtg, [6.0, 5.0, 3.0, 30.0, 20.0])
    assert episode_bounds(np.array([0, 0, 1, 2, 2, 2])) == [(0, 2), (2, 3), (3, 6)]


def test_normalised_score_and_mix_parsing():
    assert normalised_score(22.0, 22.0, 500.0) == 0.0
    assert normalised_score(500.0, 22.0, 500.0) == 100.0
    assert parse_mix("random=1, expert=3") == {"random": 0.25, "expert": 0.75}
    with pytest.raises(ValueError, match="NAME=WEIGHT"):
        parse_mix("greedy=1")
    with pytest.raises(ValueError, match="not a number"):
        parse_mix("random=lots")
    with pytest.raises(ValueError, match="positive"):
        parse_mix("random=0")


def _tiny_dataset() -> OfflineDataset:
    episode_ids = np.array([0, 0, 0, 1, 1])
    return OfflineDataset(
        observations=np.arange(10, dtype=np.float32).reshape(5, 2),
        actions=np.array([0, 1, 1, 0, 1]),
        rewards=np.ones(5, dtype=np.float32),
        terminals=np.array([False, False, True, False, False]),
        timeouts=np.array([False, False, False, False, True]),
        episode_ids=episode_ids,
        policy_ids=np.array([0, 0, 0, 1, 1]),
        metadata={"format": "tandem-offline-v1", "env_id": "Toy-v0", "observation_shape": [2],
                  "action_kind": "discrete", "action_dim": 2,
                  "policies": [{"name": "random", "mean_return": 3.0}, {"name": "expert", "mean_return": 2.0}]},
    )


def test_dataset_round_trips_through_its_directory(tmp_path):
    dataset = _tiny_dataset()
    dataset.save(tmp_path / "data")
    loaded = load_offline_dataset(tmp_path / "data")
    for name in ("observations", "actions", "rewards", "terminals", "timeouts", "episode_ids", "policy_ids"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(dataset, name))
    assert loaded.metadata == dataset.metadata
    np.testing.assert_array_equal(loaded.episode_returns(), [3.0, 2.0])
    np.testing.assert_array_equal(loaded.returns_to_go(), [3.0, 2.0, 1.0, 2.0, 1.0])


def _save_broken(tmp_path, **changes):
    dataset = _tiny_dataset()
    for name, value in changes.items():
        setattr(dataset, name, value)
    return dataset.save(tmp_path / "broken")


def test_loader_errors_name_the_file_field_and_row(tmp_path):
    with pytest.raises(FileNotFoundError, match="tandem collect"):
        load_offline_dataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"transitions.npz, field 'rewards': has 4 rows"):
        load_offline_dataset(_save_broken(tmp_path, rewards=np.ones(4, dtype=np.float32)))
    with pytest.raises(DataError, match=r"row 4, field 'episode_ids'"):
        load_offline_dataset(_save_broken(tmp_path, episode_ids=np.array([0, 0, 0, 2, 2])))
    with pytest.raises(DataError, match=r"row 2, field 'terminals'"):
        load_offline_dataset(_save_broken(tmp_path, terminals=np.array([False, True, True, False, False])))
    with pytest.raises(DataError, match=r"row 3, field 'observations': not a finite"):
        observations = np.zeros((5, 2), dtype=np.float32)
        observations[2, 1] = np.nan
        load_offline_dataset(_save_broken(tmp_path, observations=observations))
    folder = _save_broken(tmp_path)
    metadata = json.loads((folder / "metadata.json").read_text())
    del metadata["action_kind"]
    (folder / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(DataError, match=r"metadata.json, field 'action_kind': missing"):
        load_offline_dataset(folder)


def test_run_episodes_keeps_whole_episodes_with_a_quota_per_env():
    envs = vector_env_by_id("CartPole-v1", 3)
    episodes = run_episodes(envs, random_actor(envs, seed=0), episodes=7, seed=0, progress=False)
    assert len(episodes) == 7
    for episode in episodes:
        ends = episode["terminal"] | episode["timeout"]
        assert ends[-1] and not ends[:-1].any()
        assert episode["obs"].shape == (len(episode["reward"]), 4)
    # the observations follow one another: CartPole's x changes by at most tau * |velocity| per step
    first = episodes[0]["obs"]
    assert np.all(np.abs(np.diff(first[:, 0])) <= 0.02 * np.abs(first[:-1, 1]) + 1e-6)


@pytest.mark.e2e
def test_collect_writes_a_mixture_whose_ppo_policies_beat_random(tmp_path):
    config = CollectConfig(out=tmp_path / "cartpole", episodes=24, ppo_steps=16_384, num_envs=4, progress=False)
    dataset = collect_offline_dataset(config)
    loaded = load_offline_dataset(tmp_path / "cartpole")
    assert len(loaded) == len(dataset) and loaded.metadata["episodes"] == 24
    returns = loaded.policy_returns()
    assert set(returns) == {"random", "medium", "expert"}
    assert returns["expert"] > 1.5 * returns["random"], returns
    per_policy = {name: (loaded.policy_ids == k).sum() for k, name in enumerate(returns)}
    assert all(count > 0 for count in per_policy.values())
    assert (tmp_path / "cartpole" / "policies" / "expert.safetensors").is_file()
    assert isinstance(gym.spaces.Discrete(loaded.metadata["action_dim"]), gym.spaces.Discrete)
