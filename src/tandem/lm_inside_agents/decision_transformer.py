"""Decision Transformer (Chen et al. 2021): RL as conditional sequence modelling.

A trajectory becomes the token sequence  (R_1, s_1, a_1, R_2, s_2, a_2, ...)  where R_t = sum_{k >= t} r_k is
the return-to-go; every token gets its own linear / embedding projection plus a learned embedding of its
timestep t (shared by the three tokens of a step). A causal transformer reads the last K steps (3K tokens)
and predicts a_t from the hidden state at s_t's token, i.e. from (R_{<=t}, s_{<=t}, a_{<t}):

    a_t ~ pi(a_t | R_{t-K+1..t}, s_{t-K+1..t}, a_{t-K+1..t-1})         (return-conditioned policy)

Discrete actions: cross-entropy on logits. Continuous actions: tanh outputs in [-1, 1] against the actions
rescaled to [-1, 1], mean squared error. At evaluation the first return-to-go is the target return, and
after each reward R_{t+1} = R_t - r_t; returns are divided by `return_scale` before embedding.
With `condition_on_return=False` the same network reads (s, a) pairs only: behaviour cloning.

The transformer is the DT's own (`hidden`, `layers`, `heads`), or a pretrained causal LM's decoder, as Reid,
Yamada and Gu (2022, "Can Wikipedia help offline reinforcement learning?", arXiv:2201.12122) did with GPT-2
(`pretrained_decision_transformer`): the LM's layers and final norm, initialised from the checkpoint, read the
DT's own token embeddings (`inputs_embeds`; the LM's vocabulary is not used) and the action head reads their
output, so width and depth are the checkpoint's. Its positions count from the window's first real token, so
left padding moves nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel

from tandem.lm_inside_agents.episodes import make_env_by_id
from tandem.lm_inside_agents.evaluation import play_episodes
from tandem.lm_inside_agents.offline_data import OfflineDataset, returns_to_go
from tandem.models.loading import load_causal_lm


@dataclass
class DTShape:
    """Everything needed to rebuild a Decision Transformer (saved as JSON next to the weights)."""

    state_dim: int
    action_dim: int  # number of actions (discrete) or the Box dimension (continuous)
    discrete: bool
    context: int = 20  # K, steps per window
    hidden: int = 64
    layers: int = 3
    heads: int = 1
    dropout: float = 0.1
    max_timestep: int = 1000
    condition_on_return: bool = True
    return_scale: float = 1.0
    action_low: list[float] | None = None
    action_high: list[float] | None = None
    backbone: dict | None = None  # a pretrained decoder's config.json as a dict; None: the DT's own transformer

    @property
    def tokens_per_step(self) -> int:
        return 3 if self.condition_on_return else 2


def decrement_return_to_go(return_to_go: np.ndarray | float, reward: np.ndarray | float) -> np.ndarray | float:
    """R_{t+1} = R_t - r_t: the return still to collect after receiving reward r_t (evaluation, Chen et al. 2021)."""
    return return_to_go - reward


def interleave_tokens(*streams: Tensor) -> Tensor:
    """(B, K, H) streams x, y, z -> (B, K * len(streams), H) ordered x_1, y_1, z_1, x_2, y_2, z_2, ..."""
    stacked = torch.stack(streams, dim=2)
    return stacked.reshape(stacked.shape[0], -1, stacked.shape[-1])


def attention_block_mask(real: Tensor, tokens_per_step: int) -> Tensor:
    """(B, L, L) bool mask, True = may NOT attend: causal over L = K * tokens_per_step tokens, no attending to
    left padding (steps with real = 0), except that every token sees itself (padding rows stay finite)."""
    length = real.shape[1] * tokens_per_step
    real_tokens = real.bool().repeat_interleave(tokens_per_step, dim=1)  # (B, L)
    causal = torch.ones(length, length, dtype=torch.bool, device=real.device).tril()
    allowed = causal.unsqueeze(0) & real_tokens.unsqueeze(1)
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=real.device).unsqueeze(0)
    return ~allowed


class DecisionTransformer(nn.Module):
    """Embeddings of (return-to-go, state, action) + timestep, a causal transformer, an action head.

    With `shape.backbone` the transformer is a Hugging Face decoder of that config: `backbone`, when given (the
    pretrained one), else built fresh from the config (to load saved weights into).
    """

    def __init__(self, shape: DTShape, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.shape = shape
        h = shape.hidden
        self.embed_timestep = nn.Embedding(shape.max_timestep + 1, h)
        self.embed_return = nn.Linear(1, h)
        self.embed_state = nn.Linear(shape.state_dim, h)
        self.embed_action = nn.Embedding(shape.action_dim, h) if shape.discrete else nn.Linear(shape.action_dim, h)
        self.embed_norm = nn.LayerNorm(h)
        if shape.backbone is None:
            layer = nn.TransformerEncoderLayer(h, shape.heads, 4 * h, shape.dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, shape.layers, enable_nested_tensor=False)
        else:
            if backbone is None:
                backbone = AutoModel.from_config(AutoConfig.for_model(**shape.backbone), dtype=torch.float32)
            backbone.set_input_embeddings(nn.Embedding(1, h))  # tokens come as embeddings: no vocabulary to keep
            self.transformer = backbone
        self.predict_action = nn.Linear(h, shape.action_dim)
        # state normalisation from the training data (identity until `set_state_statistics`)
        self.register_buffer("state_mean", torch.zeros(shape.state_dim))
        self.register_buffer("state_std", torch.ones(shape.state_dim))

    def set_state_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.state_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.state_std.copy_(torch.as_tensor(np.maximum(std, 1e-6), dtype=torch.float32))

    def embed(self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor) -> Tensor:
        """The interleaved token embeddings (B, tokens_per_step * K, H), before the transformer."""
        time = self.embed_timestep(timesteps.clamp(0, self.shape.max_timestep))
        state = self.embed_state((states - self.state_mean) / self.state_std) + time
        action = self.embed_action(actions if self.shape.discrete else actions.float()) + time
        if not self.shape.condition_on_return:
            return interleave_tokens(state, action)
        ret = self.embed_return(returns_to_go.unsqueeze(-1) / self.shape.return_scale) + time
        return interleave_tokens(ret, state, action)

    def forward(self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor,
                real: Tensor | None = None) -> Tensor:
        """Action predictions (B, K, action_dim) read at each step's state token: logits, or tanh actions in
        [-1, 1]. Inputs: returns_to_go (B, K) unscaled, states (B, K, S), actions (B, K) ints or (B, K, A) in
        [-1, 1], timesteps (B, K), real (B, K) 1 on real steps, 0 on left padding."""
        batch, steps = states.shape[:2]
        real = torch.ones(batch, steps, device=states.device) if real is None else real
        tokens = self.embed_norm(self.embed(returns_to_go, states, actions, timesteps))
        hidden = self.encode(tokens, real)
        state_tokens = hidden[:, self.shape.tokens_per_step - 2 :: self.shape.tokens_per_step]
        out = self.predict_action(state_tokens)
        return out if self.shape.discrete else torch.tanh(out)

    def encode(self, tokens: Tensor, real: Tensor) -> Tensor:
        """The transformer over the interleaved tokens (B, L, H), masked by `attention_block_mask`."""
        blocked = attention_block_mask(real, self.shape.tokens_per_step)
        if self.shape.backbone is None:
            return self.transformer(tokens, mask=blocked.repeat_interleave(self.shape.heads, dim=0))
        # a Hugging Face decoder takes the same mask as an additive (B, 1, L, L) one, used as given
        additive = torch.zeros(blocked.shape, dtype=tokens.dtype, device=tokens.device)
        additive = additive.masked_fill(blocked, torch.finfo(tokens.dtype).min).unsqueeze(1)
        real_tokens = real.repeat_interleave(self.shape.tokens_per_step, dim=1)
        positions = (real_tokens.cumsum(1) - 1).clamp(min=0).long()
        output = self.transformer(inputs_embeds=tokens, attention_mask=additive, position_ids=positions, use_cache=False)
        return output.last_hidden_state

    # actions in the env's units <-> [-1, 1] (continuous only)
    def to_unit(self, actions: np.ndarray) -> np.ndarray:
        low, high = np.asarray(self.shape.action_low), np.asarray(self.shape.action_high)
        return np.clip(2.0 * (actions - low) / (high - low) - 1.0, -1.0, 1.0)

    def from_unit(self, actions: np.ndarray) -> np.ndarray:
        low, high = np.asarray(self.shape.action_low), np.asarray(self.shape.action_high)
        return low + (actions + 1.0) * 0.5 * (high - low)

    def save(self, folder: str | Path, name: str = "decision_transformer") -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / f"{name}.safetensors"))
        (folder / f"{name}.json").write_text(json.dumps(asdict(self.shape), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, name: str = "decision_transformer") -> DecisionTransformer:
        folder = Path(folder)
        if not (folder / f"{name}.json").is_file():
            raise FileNotFoundError(f"{folder / f'{name}.json'}: no saved Decision Transformer here")
        model = cls(DTShape(**json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))))
        model.load_state_dict(load_file(str(folder / f"{name}.safetensors")))
        return model.eval()


def shape_for(dataset: OfflineDataset, condition_on_return: bool = True, **sizes) -> DTShape:
    """A DTShape matching a dataset; return_scale defaults to the largest |episode return| in it."""
    meta = dataset.metadata
    lengths = [end - start for start, end in dataset.episode_bounds()]
    sizes.setdefault("return_scale", float(max(1.0, np.abs(dataset.episode_returns()).max())))
    sizes.setdefault("max_timestep", int(max(lengths)) + 1)
    return DTShape(
        state_dim=int(np.prod(meta["observation_shape"])), action_dim=int(meta["action_dim"]),
        discrete=dataset.discrete, condition_on_return=condition_on_return,
        action_low=meta.get("action_low"), action_high=meta.get("action_high"), **sizes,
    )


def keep_first_layers(decoder: nn.Module, layers: int) -> nn.Module:
    """The Hugging Face decoder cut to its first `layers` blocks (its final norm kept), config updated to match."""
    config = decoder.config
    if not 1 <= layers <= config.num_hidden_layers:
        raise ValueError(f"cannot keep {layers} decoder layers: the checkpoint has {config.num_hidden_layers}")
    decoder.layers = decoder.layers[:layers]
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None) is not None:  # per-layer attention kinds (sliding / full) in some configs
        config.layer_types = config.layer_types[:layers]
    return decoder


def pretrained_decision_transformer(shape: DTShape, model: str | Path, layers: int | None = None) -> DecisionTransformer:
    """A Decision Transformer whose transformer is the decoder of the causal LM at `model` (a model directory, a
    .gguf file or a LoRA folder, merged), initialised from its weights (Reid et al. 2022, arXiv:2201.12122);
    `shape`'s hidden, layers and heads are replaced by the checkpoint's, its embeddings and head stay the DT's.
    With `layers`, only the checkpoint's first `layers` decoder blocks are kept (and its final norm)."""
    decoder = load_causal_lm(model).base_model  # the layers and final norm, without the LM head
    if layers is not None:
        decoder = keep_first_layers(decoder, layers)
    config = decoder.config
    shape = replace(shape, hidden=config.hidden_size, layers=config.num_hidden_layers, heads=config.num_attention_heads,
                    backbone=json.loads(config.to_json_string(use_diff=False)))  # as saved and loaded again
    return DecisionTransformer(shape, backbone=decoder)


# ---- training batches ----------------------------------------------------------------------------


class WindowSampler:
    """Random windows of K consecutive steps of one episode, left-padded, as tensors (seeded).

    Start rows are uniform over all steps, so episodes are picked in proportion to their length (as in
    the original implementation) and windows near an episode's end are short and padded on the left.
    """

    def __init__(self, dataset: OfflineDataset, model: DecisionTransformer, gamma: float = 1.0, seed: int = 0):
        self.k = model.shape.context
        self.discrete = dataset.discrete
        self.states = dataset.observations.reshape(len(dataset), -1).astype(np.float32)
        self.actions = dataset.actions if self.discrete else model.to_unit(dataset.actions).astype(np.float32)
        self.rtg = returns_to_go(dataset.rewards, dataset.episode_ids, gamma).astype(np.float32)
        bounds = dataset.episode_bounds()
        self.episode_end = np.empty(len(dataset), dtype=np.int64)
        self.timesteps = np.empty(len(dataset), dtype=np.int64)
        for start, end in bounds:
            self.episode_end[start:end] = end
            self.timesteps[start:end] = np.arange(end - start)
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int) -> dict[str, Tensor]:
        starts = self.rng.integers(0, len(self.states), size=batch)
        return self.windows(starts)

    def windows(self, starts: np.ndarray) -> dict[str, Tensor]:
        k = self.k
        lengths = np.minimum(self.episode_end[starts] - starts, k)
        rows = starts[:, None] + np.arange(k)[None, :] - (k - lengths)[:, None]  # left-pad: shift right
        real = np.arange(k)[None, :] >= (k - lengths)[:, None]
        rows = np.where(real, rows, starts[:, None])  # any valid row; masked out
        actions = self.actions[rows]
        return {
            "returns_to_go": torch.from_numpy(np.where(real, self.rtg[rows], 0.0).astype(np.float32)),
            "states": torch.from_numpy(np.where(real[..., None], self.states[rows], 0.0).astype(np.float32)),
            "actions": torch.from_numpy(np.where(real, actions, 0) if self.discrete
                                        else np.where(real[..., None], actions, 0.0).astype(np.float32)),
            "timesteps": torch.from_numpy(np.where(real, self.timesteps[rows], 0)),
            "real": torch.from_numpy(real.astype(np.float32)),
        }


def action_loss(model: DecisionTransformer, batch: dict[str, Tensor]) -> Tensor:
    """Cross-entropy (discrete) or mean squared error (continuous) of the predicted actions on real steps."""
    predicted = model(batch["returns_to_go"], batch["states"], batch["actions"], batch["timesteps"], batch["real"])
    real = batch["real"].bool()
    if model.shape.discrete:
        return F.cross_entropy(predicted[real], batch["actions"][real])
    return F.mse_loss(predicted[real], batch["actions"][real])


def train_decision_transformer(
    model: DecisionTransformer, dataset: OfflineDataset, steps: int = 2000, batch_size: int = 64,
    lr: float = 1e-3, weight_decay: float = 1e-4, warmup_steps: int = 100, seed: int = 0, progress: bool = True,
    checkpoint_every: int = 0, at_checkpoint: Callable[[int], None] | None = None,
) -> list[float]:
    """AdamW on `action_loss` over random windows, linear warm-up then cosine decay; returns the losses.

    With `checkpoint_every` > 0, `at_checkpoint(step)` is called (the model in eval mode) after every
    `checkpoint_every` steps, e.g. to evaluate the model part-way through training."""
    torch.manual_seed(seed)
    observations = dataset.observations.reshape(len(dataset), -1)
    model.set_state_statistics(observations.mean(0), observations.std(0))
    sampler = WindowSampler(dataset, model, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup_steps))
                                                 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    model.train()
    losses = []
    bar = tqdm(range(steps), desc="dt" if model.shape.condition_on_return else "bc", disable=not progress)
    for step in bar:
        loss = action_loss(model, sampler.sample(batch_size))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if at_checkpoint is not None and checkpoint_every > 0 and (step + 1) % checkpoint_every == 0:
            model.eval()
            at_checkpoint(step + 1)
            model.train()
    model.eval()
    return losses


# ---- evaluation: condition on a target return and decrement it ------------------------------------


class EpisodeContext:
    """One running episode's history, giving the last-K window the model reads."""

    def __init__(self, target_return: float, first_state: np.ndarray) -> None:
        self.states = [np.asarray(first_state, dtype=np.float32).reshape(-1)]
        self.returns_to_go = [float(target_return)]
        self.actions: list = []
        self.total = 0.0

    def record(self, action, reward: float, next_state: np.ndarray | None) -> None:
        """Store the action taken and the reward; R_{t+1} = R_t - r_t for the next state (if the episode goes on)."""
        self.actions.append(action)
        self.total += float(reward)
        if next_state is not None:
            self.states.append(np.asarray(next_state, dtype=np.float32).reshape(-1))
            self.returns_to_go.append(decrement_return_to_go(self.returns_to_go[-1], float(reward)))

    def window(self, k: int, action_shape: tuple[int, ...], action_dtype) -> dict[str, np.ndarray]:
        """Last k steps ending at the current state; the current action slot is a placeholder the model
        cannot see (it sits after the state token it predicts from)."""
        steps = len(self.states)
        first = max(0, steps - k)
        actions = self.actions[first:] + [np.zeros(action_shape, dtype=action_dtype)]
        pad = k - (steps - first)
        return {
            "returns_to_go": np.array([0.0] * pad + self.returns_to_go[first:], dtype=np.float32),
            "states": np.concatenate([np.zeros((pad, self.states[0].shape[0]), np.float32), np.stack(self.states[first:])]),
            "actions": np.concatenate([np.zeros((pad, *action_shape), action_dtype), np.stack(actions).astype(action_dtype)]),
            "timesteps": np.array([0] * pad + list(range(first, steps)), dtype=np.int64),
            "real": np.array([0.0] * pad + [1.0] * (steps - first), dtype=np.float32),
        }


class ReturnConditionedActor:
    """The Decision Transformer acting in `play_episodes`: one `EpisodeContext` per env, all envs' windows in one
    forward pass, greedy actions (argmax / the tanh mean) towards `target_return`."""

    def __init__(self, model: DecisionTransformer, target_return: float) -> None:
        self.model, self.target_return = model, target_return
        shape = model.shape
        self.action_shape = () if shape.discrete else (shape.action_dim,)
        self.action_dtype = np.int64 if shape.discrete else np.float32
        self.contexts: dict[int, EpisodeContext] = {}
        self.unit: dict[int, np.ndarray] = {}  # the model's action (unit box for continuous ones), as it is recorded

    def start(self, env: int, observation: np.ndarray) -> None:
        self.contexts[env] = EpisodeContext(self.target_return, observation)

    @torch.no_grad()
    def act(self, envs: list[int], observations: list[np.ndarray]) -> list:
        windows = [self.contexts[i].window(self.model.shape.context, self.action_shape, self.action_dtype) for i in envs]
        batch = {key: torch.from_numpy(np.stack([w[key] for w in windows])) for key in windows[0]}
        predicted = self.model(batch["returns_to_go"], batch["states"], batch["actions"], batch["timesteps"],
                               batch["real"])[:, -1]
        unit = predicted.argmax(-1).numpy() if self.model.shape.discrete else predicted.numpy().astype(np.float32)
        self.unit.update(zip(envs, unit))
        return list(unit) if self.model.shape.discrete else list(self.model.from_unit(unit).astype(np.float32))

    def record(self, env: int, action, reward: float, observation: np.ndarray, ended: bool) -> None:
        self.contexts[env].record(self.unit[env], reward, None if ended else observation)


@torch.no_grad()
def evaluate_decision_transformer(
    model: DecisionTransformer, env_id: str, target_return: float, episodes: int = 10, num_envs: int = 8, seed: int = 0,
) -> np.ndarray:
    """Returns of `episodes` episodes acting greedily conditioned on `target_return` (`play_episodes`, `num_envs`
    at a time, reset seeds seed, seed + 1, ...)."""
    model.eval()
    envs = [make_env_by_id(env_id) for _ in range(min(num_envs, episodes))]
    try:
        outcomes = play_episodes(envs, ReturnConditionedActor(model, target_return), episodes, reset_seed=lambda k: seed + k)
    finally:
        for env in envs:
            env.close()
    return np.array([o.ret for o in outcomes])


def updates_per_second(model: DecisionTransformer, dataset: OfflineDataset, batch_size: int = 64, steps: int = 20) -> float:
    """Training throughput of `model` on windows of `dataset` (for benchmarks), after one warm-up step."""
    sampler = WindowSampler(dataset, model, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    started = None
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        loss = action_loss(model, sampler.sample(batch_size))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return steps / (time.perf_counter() - started)

