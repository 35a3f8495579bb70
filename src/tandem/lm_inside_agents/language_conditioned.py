"""Language-conditioned policies on BabyAI (Chevalier-Boisvert et al. 2019): pi(a | s, l) = p(a | s, l).

The instruction l is the mission string ("go to the red ball"). The policy (`FiLMPolicy`) embeds the 7x7x3
symbolic view (object, colour and state ids), encodes the mission with a GRU over word tokens, and lets the
mission modulate the convolutional features with FiLM (Perez et al. 2018), as the BabyAI baseline agents do
(Chevalier-Boisvert et al. 2019). It is trained by imitation of the built-in expert `BabyAIBot` (cross-entropy
on the bot's actions) and/or by PPO (`tandem.lm_inside_agents.ppo.train_ppo`).

Generalisation is measured on missions held out from training: `LanguageTask` draws episodes whose
(colour, object) pair is, or is not, in a held-out set, so a policy is tested on instructions it never saw
whose words it did see (each held-out colour and object appears in other training missions).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from minigrid.core.constants import COLOR_NAMES, OBJECT_TO_IDX, STATE_TO_IDX
from minigrid.utils.baby_ai_bot import BabyAIBot
from torch import Tensor, nn
from torch.distributions import Categorical
from tqdm.auto import tqdm

from tandem.lm_inside_agents.evaluation import play_episodes
from tandem.lm_inside_agents.ppo import AgentPPOConfig, PPOHistory, train_ppo

# Thousands of episodes PPO needed to reach 99% success in the BabyAI paper (Chevalier-Boisvert et al. 2019),
# as (low, high).
BABYAI_PAPER_PPO_KILO_EPISODES: dict[str, tuple[float, float]] = {
    "BabyAI-GoToRedBallGrey-v0": (16.0, 16.0),
    "BabyAI-GoToRedBall-v0": (261.0, 334.0),
    "BabyAI-GoToLocal-v0": (903.0, 1114.0),
}

OBJECT_NAMES = ("ball", "box", "key", "door")
# Every word of BabyAI's instruction grammar (minigrid.envs.babyai.core.verifier) plus colours and objects.
BABYAI_WORDS = sorted(
    set(COLOR_NAMES) | set(OBJECT_NAMES)
    | set("go to the a pick up put next open and then after you your on left right in front of behind".split())
)
MISSION_PAIR = re.compile(rf"\b({'|'.join(COLOR_NAMES)}) ({'|'.join(OBJECT_NAMES)})\b")
NAVIGATION_ACTIONS = 3  # left, right, forward: all a GoTo level needs (the bot uses nothing else there)


# ---- missions (pure functions) ------------------------------------------------------------------------
def mission_pairs(mission: str) -> list[tuple[str, str]]:
    """The (colour, object) pairs an instruction names: "go to the red ball" -> [("red", "ball")]."""
    return MISSION_PAIR.findall(mission.lower())


def parse_pairs(spec: str | Iterable[str]) -> frozenset[tuple[str, str]]:
    """"red ball, green key" (or a list of such strings) -> {("red", "ball"), ("green", "key")}, validated."""
    items = [s for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    pairs = set()
    for item in items:
        words = item.strip().lower().split()
        if len(words) != 2 or words[0] not in COLOR_NAMES or words[1] not in OBJECT_NAMES:
            raise ValueError(
                f"held-out mission {item.strip()!r} is not '<colour> <object>' with colour in {', '.join(COLOR_NAMES)} "
                f"and object in {', '.join(OBJECT_NAMES)}"
            )
        pairs.add((words[0], words[1]))
    return frozenset(pairs)


def is_held_out(mission: str, held_out: frozenset[tuple[str, str]]) -> bool:
    return any(pair in held_out for pair in mission_pairs(mission))


class MissionVocab:
    """Word ids for missions: 0 pads, 1 is an unknown word; fixed length so PPO rollouts stack."""

    def __init__(self, words: Sequence[str] = BABYAI_WORDS, max_words: int = 16):
        self.words = ["<pad>", "<unk>", *words]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.max_words = max_words

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, mission: str) -> np.ndarray:
        ids = [self.index.get(w, 1) for w in re.findall(r"[a-z]+", mission.lower())][: self.max_words]
        return np.array(ids + [0] * (self.max_words - len(ids)), dtype=np.int64)


# ---- the environment side ------------------------------------------------------------------------------
class LanguageTask(gym.Wrapper):
    """A BabyAI level whose episodes have training missions (`split="train"`) or held-out ones ("held_out").

    Resets are redrawn (next seed) until the mission falls in the split; the mission is returned as word ids
    (`obs["mission"]`, from `MissionVocab`) so vector envs can stack it, the text stays in `info["mission"]`.
    With `navigation_only` the action space is left/right/forward (enough for GoTo levels).
    """

    def __init__(self, env: gym.Env, held_out: frozenset[tuple[str, str]] = frozenset(),
                 split: Literal["train", "held_out", "all"] = "train", vocab: MissionVocab | None = None,
                 navigation_only: bool = False, max_redraws: int = 1000):
        super().__init__(env)
        if split == "held_out" and not held_out:
            raise ValueError("split='held_out' needs a non-empty set of held-out missions")
        self.held_out, self.split, self.max_redraws = held_out, split, max_redraws
        self.vocab = vocab or MissionVocab()
        spaces = dict(env.observation_space.spaces)
        spaces["mission"] = gym.spaces.Box(0, len(self.vocab) - 1, (self.vocab.max_words,), np.int64)
        self.observation_space = gym.spaces.Dict(spaces)
        if navigation_only:
            self.action_space = gym.spaces.Discrete(NAVIGATION_ACTIONS)

    def _wanted(self, mission: str) -> bool:
        return self.split == "all" or is_held_out(mission, self.held_out) == (self.split == "held_out")

    def _convert(self, obs: dict) -> dict:
        return {**obs, "mission": self.vocab.encode(obs["mission"])}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints each rejected object placement
            obs, info = self.env.reset(seed=seed, options=options)
            for _ in range(self.max_redraws):
                if self._wanted(obs["mission"]):
                    break
                obs, info = self.env.reset(options=options)
            else:
                raise ValueError(f"no {self.split} mission in {self.max_redraws} resets of {self.env.spec.id if self.env.spec else self.env}")
        self.mission = obs["mission"]
        return self._convert(obs), {**info, "mission": obs["mission"]}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._convert(obs), reward, terminated, truncated, {**info, "mission": obs["mission"]}


def make_task_env(env_id: str, held_out: frozenset[tuple[str, str]], split: str = "train",
                  navigation_only: bool = False) -> LanguageTask:
    return LanguageTask(gym.make(env_id), held_out, split, navigation_only=navigation_only)


def obs_to_tensors(obs: dict, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """A (batched) observation dict -> long tensors: image (B, 7, 7, 3), direction (B,), mission (B, L)."""
    image = np.asarray(obs["image"])
    batched = image.ndim == 4
    out = {
        "image": torch.as_tensor(image if batched else image[None], dtype=torch.long, device=device),
        "direction": torch.as_tensor(np.asarray(obs["direction"]).reshape(-1), dtype=torch.long, device=device),
        "mission": torch.as_tensor(np.asarray(obs["mission"]), dtype=torch.long, device=device),
    }
    if not batched:
        out["mission"] = out["mission"][None]
    return out


# ---- the policy ----------------------------------------------------------------------------------------
class FiLM(nn.Module):
    """conv -> feature-wise affine transform from the instruction -> ReLU (Perez et al. 2018)."""

    def __init__(self, channels_in: int, channels: int, condition: int):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels, 3, padding=1)
        self.scale_shift = nn.Linear(condition, 2 * channels)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        scale, shift = self.scale_shift(condition).chunk(2, dim=-1)
        return torch.relu(self.conv(x) * (1 + scale[..., None, None]) + shift[..., None, None])


class FiLMPolicy(nn.Module):
    """pi(a | s, l) and V(s, l) for BabyAI: embedded 7x7 view, GRU mission encoder, two FiLM blocks.

    Returns `(Categorical, value)`, the contract of `tandem.lm_inside_agents.ppo.train_ppo`; imitation trains the same
    Categorical's log-likelihood.
    """

    def __init__(self, n_actions: int, vocab_size: int, embed: int = 16, channels: int = 32, text: int = 64):
        super().__init__()
        # each cell is (object, colour, state): one table, with offsets, summed (BabyAI's "bag of words" input)
        self.offsets = (0, len(OBJECT_TO_IDX), len(OBJECT_TO_IDX) + len(COLOR_NAMES))
        self.cell = nn.Embedding(len(OBJECT_TO_IDX) + len(COLOR_NAMES) + len(STATE_TO_IDX), embed)
        self.words = nn.Embedding(vocab_size, 32, padding_idx=0)
        self.gru = nn.GRU(32, text, batch_first=True)
        self.film1 = FiLM(embed, channels, text)
        self.film2 = FiLM(channels, channels, text)
        self.direction = nn.Embedding(4, 8)
        features = channels + text + 8
        self.actor = nn.Sequential(nn.Linear(features, 64), nn.Tanh(), nn.Linear(64, n_actions))
        self.critic = nn.Sequential(nn.Linear(features, 64), nn.Tanh(), nn.Linear(64, 1))

    def encode_mission(self, mission: Tensor) -> Tensor:
        """GRU state after the last real word of each mission."""
        outputs, _ = self.gru(self.words(mission))
        last = (mission != 0).sum(1).clamp(min=1) - 1
        return outputs[torch.arange(mission.shape[0], device=mission.device), last]

    def forward(self, obs: dict[str, Tensor]) -> tuple[Categorical, Tensor]:
        image = obs["image"]
        offsets = torch.tensor(self.offsets, device=image.device)
        cells = self.cell(image.clamp(min=0) + offsets).sum(-2)  # (B, 7, 7, embed)
        x = cells.permute(0, 3, 1, 2)
        text = self.encode_mission(obs["mission"])
        x = self.film2(self.film1(x, text), text)
        pooled = x.amax(dim=(2, 3))
        features = torch.cat([pooled, text, self.direction(obs["direction"])], dim=-1)
        return Categorical(logits=self.actor(features)), self.critic(features).squeeze(-1)


# ---- imitation of the BabyAI bot ---------------------------------------------------------------------------
@dataclass
class Demonstrations:
    """Expert (observation, action) pairs, as arrays; `episodes` bot episodes, `missions` their instructions."""

    image: np.ndarray
    direction: np.ndarray
    mission: np.ndarray
    action: np.ndarray
    episodes: int
    missions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.action)


def collect_demonstrations(env: LanguageTask, n_episodes: int, seed: int = 0, progress: bool = False) -> Demonstrations:
    """`n_episodes` episodes of `BabyAIBot` (the BabyAI paper's expert) in `env`; only successful ones are kept,
    and an episode where the bot needs an action outside `env.action_space` (navigation-only tasks) is dropped."""
    rows: dict[str, list] = {"image": [], "direction": [], "mission": [], "action": []}
    missions, kept = [], 0
    for episode in tqdm(range(n_episodes), desc="bot demonstrations", disable=not progress):
        obs, info = env.reset(seed=seed * 1_000_003 + episode)
        bot = BabyAIBot(env.unwrapped)
        steps: dict[str, list] = {k: [] for k in rows}
        reward = 0.0
        for _ in range(env.unwrapped.max_steps):
            action = int(bot.replan())
            if action >= env.action_space.n:  # e.g. picking up a blocking object with navigation-only actions
                break
            for key in ("image", "direction", "mission"):
                steps[key].append(obs[key])
            steps["action"].append(action)
            obs, reward, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        if reward > 0:
            for key in rows:
                rows[key] += steps[key]
            missions.append(info["mission"])
            kept += 1
    return Demonstrations(*(np.asarray(rows[k]) for k in ("image", "direction", "mission", "action")), kept, missions)


def imitation_loss(policy: nn.Module, batch: dict[str, Tensor], actions: Tensor) -> Tensor:
    """Behaviour cloning: mean over steps of -log pi(a_bot | s, l)."""
    dist, _ = policy(batch)
    return -dist.log_prob(actions).mean()


def train_imitation(policy: nn.Module, demos: Demonstrations, epochs: int = 10, batch_size: int = 128,
                    lr: float = 1e-3, seed: int = 0, progress: bool = False) -> list[float]:
    """Adam on `imitation_loss` over shuffled demonstration steps; returns the mean loss of each epoch."""
    if len(demos) == 0:
        raise ValueError("no successful demonstrations to imitate")
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    device = next(policy.parameters()).device
    data = obs_to_tensors({"image": demos.image, "direction": demos.direction, "mission": demos.mission}, device)
    actions = torch.as_tensor(demos.action, device=device)
    losses = []
    policy.train()
    for _ in tqdm(range(epochs), desc="imitation", disable=not progress):
        order = torch.randperm(len(actions), device=device)
        total = 0.0
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = imitation_loss(policy, {k: v[index] for k, v in data.items()}, actions[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        losses.append(total / len(order))
    return losses


# ---- evaluation and PPO --------------------------------------------------------------------------------------
@torch.no_grad()
def success_rate(policy: nn.Module | None, make_env: Callable[[], LanguageTask], episodes: int = 100, seed: int = 0,
                 greedy: bool = True, n_parallel: int = 16) -> dict[str, float]:
    """Success (reward > 0 at the end) of `policy` over `episodes` episodes, `n_parallel` at a time (`play_episodes`,
    reset seeds seed * 1_000_003 + k).

    `policy=None` is the uniformly random policy (the chance baseline).
    """
    rng = np.random.default_rng(seed)
    device = next(policy.parameters()).device if policy is not None else "cpu"
    if policy is not None:
        policy.eval()
    envs = [make_env() for _ in range(min(n_parallel, episodes))]

    def act(live: list[int], observations: list[dict]) -> list[int]:
        if policy is None:
            return [int(rng.integers(envs[i].action_space.n)) for i in live]
        batch = obs_to_tensors({k: np.stack([o[k] for o in observations]) for k in ("image", "direction", "mission")}, device)
        dist, _ = policy(batch)
        return (dist.probs.argmax(-1) if greedy else dist.sample()).tolist()

    outcomes = play_episodes(envs, act, episodes, reset_seed=lambda k: seed * 1_000_003 + k)
    return {"success_rate": sum(o.last_reward > 0 for o in outcomes) / episodes,
            "mean_length": float(np.mean([o.steps for o in outcomes])), "episodes": float(episodes)}


def episodes_to_success(successes: Sequence[bool], threshold: float = 0.99, window: int = 200) -> int | None:
    """Number of training episodes after which the success rate over the last `window` episodes first reaches
    `threshold` (how the BabyAI paper counts sample efficiency); None if it never does."""
    if len(successes) < window:
        return None
    running = np.convolve(np.asarray(successes, dtype=float), np.ones(window), mode="valid") / window
    hits = np.flatnonzero(running >= threshold - 1e-12)
    return int(hits[0] + window) if len(hits) else None


def train_ppo_language(policy: FiLMPolicy, env_fn: Callable[[], LanguageTask], config: AgentPPOConfig,
                       num_envs: int = 16, callback=None) -> PPOHistory:
    """PPO (`tandem.lm_inside_agents.ppo`) on `num_envs` synchronous copies of the task, mission ids fed to the policy."""
    envs = gym.vector.SyncVectorEnv([env_fn for _ in range(num_envs)])
    device = next(policy.parameters()).device
    policy.train()
    try:
        return train_ppo(envs, policy, config, obs_fn=lambda obs: obs_to_tensors(obs, device), callback=callback)
    finally:
        envs.close()


__all__ = [
    "BABYAI_PAPER_PPO_KILO_EPISODES",
    "Demonstrations",
    "FiLMPolicy",
    "LanguageTask",
    "MissionVocab",
    "collect_demonstrations",
    "episodes_to_success",
    "imitation_loss",
    "is_held_out",
    "make_task_env",
    "mission_pairs",
    "obs_to_tensors",
    "parse_pairs",
    "success_rate",
    "train_imitation",
    "train_ppo_language",
]
