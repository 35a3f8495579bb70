"""A language model as a world model (as in RAP, Hao et al. 2023): p(s_{t+1} | s_t, a_t) = f_LLM(s_t, a_t).

Transitions of an environment are written as text (`tandem.lm_inside_agents.render`): the prompt holds the state and
the action's name, the completion the next state, the reward and whether the episode ended, in the one format
of `tandem.lm_inside_agents.prompts` (which `HFBackend.predict_next_state` asks with too). One FrozenLake transition,
prompt then completion, exactly as the model reads and writes it (no chat template, also for chat models)::

    state:
    task: walk from S to the goal G without stepping into a hole H
    you: row 0, column 1
    S@FF
    FHFH
    FFFH
    HFFG
    action: right
    next state:
    task: walk from S to the goal G without stepping into a hole H
    you: row 0, column 2
    SF@F
    FHFH
    FFFH
    HFFG
    reward: 0
    done: no

followed by the tokenizer's end-of-sequence token. The LM is fine-tuned on these pairs with the ordinary SFT
trainer (next-token NLL on the completion only): by default a tiny tandem model built from scratch (tokenizer
`train_tokenizer` on the transitions' words, model `build_model`), or with `model` a pretrained causal LM (a
Hugging Face directory, a .gguf file or a LoRA folder) and its own tokenizer, every weight or LoRA adapters
(`lora_rank`, merged into the saved model). It is measured by greedy next-state exact match on held-out
transitions. `LMWorldModel` answers batched transition queries (the `TransitionModel` interface of
`tandem.lm_inside_agents.planning`, where agents plan in it and learn Dyna-style from it), and `WorldModelEnv` wraps any
such model as a Gymnasium environment whose `step` reports text it cannot parse instead of guessing.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from gymnasium.envs.toy_text.frozen_lake import generate_random_map
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from tandem.lm_inside_agents.prompts import TransitionParseError, parse_transition, transition_completion, transition_prompt
from tandem.lm_inside_agents.render import action_names, render_state
from tandem.config import TrainConfig, apply_model_defaults
from tandem.generation import generate_completions
from tandem.generation.engines import engine_for
from tandem.models.factory import ModelSize, build_model
from tandem.models.loading import load_causal_lm, load_tokenizer
from tandem.models.origin import model_origin
from tandem.models.tokenizer import train_tokenizer
from tandem.files import atomic_write_text
from tandem.trainers.sft import LoRAOptions, SFTConfig, run_sft

logger = logging.getLogger(__name__)

_WORDS = re.compile(r"[a-z]+")
_HEADER = re.compile(r"[a-z][a-z ]*: ")  # "task: ...", "you: row 0, column 1": a line that names what it holds
FORMAT_FILE = "tandem_world_model.json"  # beside a trained world model's weights: the text format it reads and writes


@dataclass(frozen=True)
class TextTransition:
    """One environment step as text: (s_t, a_t) -> (s_{t+1}, r_t, done_t); `done` is termination, not a time limit."""

    state: str
    action: str
    next_state: str
    reward: float
    done: bool


@dataclass(frozen=True)
class Prediction:
    """A transition model's answer for one (state, action); `error` says why it could not be read (then invalid)."""

    next_state: Any
    reward: float
    done: bool
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None


# ---- text format (pure functions; the prompt and completion are `tandem.lm_inside_agents.prompts`') ----------
def tokenizer_corpus(texts: Iterable[str]) -> Iterator[str]:
    """The lowercase words of `texts`: BPE merges learnt from them never join map symbols, so a rendered grid
    stays one character per token and a moved agent shifts no other token (copying stays position-aligned)."""
    for text in texts:
        yield " ".join(_WORDS.findall(text))


def sft_rows(transitions: Sequence[TextTransition], spaced: bool = False, end_repeats: int = 1) -> list[dict[str, str]]:
    """Prompt/completion records for the SFT trainer; `spaced`: map rows written by `spaced_cells`; `end_repeats`:
    each transition that ends an episode written that many times (resampling the rare class), in place."""
    write = spaced_cells if spaced else str
    return [
        {"prompt": transition_prompt(write(t.state), t.action),
         "completion": transition_completion(write(t.next_state), t.reward, t.done)}
        for t in transitions
        for _ in range(end_repeats if t.done else 1)
    ]


# ---- data -----------------------------------------------------------------------------------------
def collect_transitions(
    make_env: Callable[[int], gym.Env],
    n_episodes: int,
    seed: int = 0,
    max_episode_steps: int = 100,
    progress: bool = False,
    counts: dict | None = None,
) -> list[TextTransition]:
    """Distinct text transitions from uniformly random episodes; `make_env(i)` builds the env of episode i.

    A (state, action) pair seen twice is kept once (the environments used here are deterministic, so a
    repeat would only weight the data towards easy, frequent states).
    """
    rng = random.Random(seed)
    seen: dict[tuple[str, str], TextTransition] = {}
    for episode in tqdm(range(n_episodes), desc="collect transitions", disable=not progress):
        env = make_env(episode)
        names = action_names(env)
        obs, _ = env.reset(seed=seed * 100_003 + episode)
        state = render_state(env, obs)
        for _ in range(max_episode_steps):
            action = rng.randrange(len(names))
            obs, reward, terminated, truncated, _ = env.step(action)
            if counts is not None:  # real environment steps taken, repeats included
                counts["steps"] = counts.get("steps", 0) + 1
            next_state = render_state(env, obs)
            seen.setdefault((state, names[action]), TextTransition(state, names[action], next_state, float(reward), bool(terminated)))
            if terminated or truncated:
                break
            state = next_state
        env.close()
    return list(seen.values())


def collect_text_transitions(
    env, n_episodes: int, seed: int = 0, max_episode_steps: int = 100, progress: bool = False,
    counts: dict | None = None,
) -> list[TextTransition]:
    """Distinct transitions of uniformly random episodes in an agent's text env (`tandem.lm_as_agent.env`, e.g.
    ``babyai:GoToObj``): the states are exactly the observations a language agent reads there, the actions its
    action names. Episode i starts from seed ``seed * 100_003 + i`` of `env`'s split (take the training split,
    so the agent's held-out start states stay unseen). A repeated (state, action) is kept once, its first outcome:
    where the text does not hold the whole state (BabyAI's relative view shows no walls beside or behind) the
    same text and action can lead to different texts, and the world model's exact match is bounded by that.
    """
    names = getattr(env, "names", None)
    if not names:
        raise ValueError(f"{type(env).__name__}: a world model of a text env needs its fixed action names (a Gymnasium "
                         "env with a Discrete action space, e.g. babyai:GoToObj)")
    rng = random.Random(seed)
    seen: dict[tuple[str, str], TextTransition] = {}
    for episode in tqdm(range(n_episodes), desc="collect transitions", disable=not progress):
        state = env.reset(seed=seed * 100_003 + episode)
        for _ in range(max_episode_steps):
            action = names[rng.randrange(len(names))]
            result = env.step(action)
            if counts is not None:
                counts["steps"] = counts.get("steps", 0) + 1
            seen.setdefault((state, action), TextTransition(state, action, result.observation, float(result.reward),
                                                            bool(result.terminated)))
            if result.terminated or result.truncated:
                break
            state = result.observation
    env.close()
    return list(seen.values())


def split_transitions(
    transitions: Sequence[TextTransition], eval_fraction: float, seed: int = 0
) -> tuple[list[TextTransition], list[TextTransition]]:
    """(train, held_out): a seeded random split by transition, so no held-out (state, action) is trained on."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    order = list(transitions)
    random.Random(seed).shuffle(order)
    n_held_out = max(1, int(round(len(order) * eval_fraction)))
    if n_held_out >= len(order):
        raise ValueError(f"{len(order)} transitions are too few to hold out {eval_fraction:.0%} and still train")
    return order[n_held_out:], order[:n_held_out]


def copy_state_accuracy(transitions: Sequence[TextTransition]) -> float:
    """Exact-match accuracy of the baseline that predicts s_{t+1} = s_t."""
    return float(np.mean([t.next_state == t.state for t in transitions])) if transitions else float("nan")


def frozen_lake_maps(n_maps: int, size: int = 4, seed: int = 0, p_frozen: float = 0.8) -> list[list[str]]:
    """`n_maps` distinct solvable random FrozenLake maps (Gymnasium's generator, seeded)."""
    maps: dict[str, list[str]] = {}
    attempt = 0
    while len(maps) < n_maps:
        if attempt > 50 * n_maps:
            raise ValueError(f"could not draw {n_maps} distinct {size}x{size} FrozenLake maps")
        desc = generate_random_map(size=size, p=p_frozen, seed=seed * 1_000_003 + attempt)
        maps.setdefault("".join(desc), desc)
        attempt += 1
    return list(maps.values())


def map_env_factory(env_id: str, maps: Sequence[Sequence[str]] | None = None) -> Callable[[int], gym.Env]:
    """`make_env(i)`: env `env_id` (FrozenLake made deterministic, on map `i % len(maps)` when maps are given)."""
    if env_id.startswith("FrozenLake"):
        if maps is None:
            return lambda i: gym.make(env_id, is_slippery=False)
        return lambda i: gym.make(env_id, desc=list(maps[i % len(maps)]), is_slippery=False)
    return lambda i: gym.make(env_id)


def spaced_cells(state: str) -> str:
    """`state` with each map row's characters separated by spaces (``S@FF`` -> ``S @ F F``); named lines such as
    ``you: row 0, column 1`` are kept. A pretrained BPE merges runs of map cells unevenly (SmolLM2: ``SFFF`` ->
    ``S``, ``FF``, ``F``), so one move reshapes the row's tokens; spaced, every cell is one token and a move changes
    one token, as the tiny model's character-level map tokens do."""
    return "\n".join(line if _HEADER.match(line) else " ".join(line) for line in state.split("\n"))


def joined_cells(state: str) -> str:
    """The inverse of `spaced_cells`: map rows read back to one character per cell; a row the model did not write
    spaced is left as it is (and then matches no real state)."""
    def join(line: str) -> str:
        spaced = not _HEADER.match(line) and len(line) % 2 == 1 and set(line[1::2]) <= {" "}
        return line[::2] if spaced else line
    return "\n".join(join(line) for line in state.split("\n"))


# ---- the model -------------------------------------------------------------------------------------
class LMWorldModel:
    """f_LLM(s_t, a_t) behind the `TransitionModel` interface: batched greedy decoding, cached per (state, action).

    States are the renderer's text; an output that does not parse comes back as an invalid `Prediction`
    (and is counted in `n_parse_errors`) rather than a guess. `spaced`: the model was trained on `spaced_cells`
    text, so prompts are written that way and predicted states read back with `joined_cells`.
    """

    def __init__(self, model, tokenizer, action_names: Sequence[str], max_new_tokens: int = 128, batch_size: int = 64,
                 engine=None, spaced: bool = False):
        self.model = model.eval()
        self.engine = engine  # a generation engine made from `model` decodes instead (`tandem.generation.engines`)
        self.tokenizer = tokenizer
        self.action_names = list(action_names)
        self.n_actions = len(self.action_names)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.spaced = spaced
        self.cache: dict[tuple[str, int], Prediction] = {}
        self.n_queries = 0
        self.n_parse_errors = 0

    def observe(self, env: gym.Env, obs: Any) -> str:
        return render_state(env, obs)

    def predict(self, states: Sequence[str], actions: Sequence[int]) -> list[Prediction]:
        keys = list(zip(states, (int(a) for a in actions)))
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            prompts = [transition_prompt(spaced_cells(s) if self.spaced else s, self.action_names[a]) for s, a in missing]
            texts = generate_completions(self.model, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens,
                                         temperature=0.0, batch_size=self.batch_size, engine=self.engine)
            for key, text in zip(missing, texts):
                self.cache[key] = self._read(text)
        self.n_queries += len(keys)
        return [self.cache[k] for k in keys]

    def _read(self, text: str) -> Prediction:
        try:
            next_state, reward, done = parse_transition(text)
        except TransitionParseError as error:
            self.n_parse_errors += 1
            logger.warning("world model output not understood: %s", error)
            return Prediction(None, 0.0, True, error=str(error))
        return Prediction(joined_cells(next_state) if self.spaced else next_state, reward, done)


def evaluate_world_model(world_model, transitions: Sequence[TextTransition]) -> dict[str, float]:
    """Greedy next-state exact match, reward and done accuracy, and the parse-error rate on `transitions`."""
    index = {name: i for i, name in enumerate(world_model.action_names)}
    predictions = world_model.predict([t.state for t in transitions], [index[t.action] for t in transitions])
    n = max(len(transitions), 1)
    return {
        "next_state_accuracy": sum(p.valid and p.next_state == t.next_state for p, t in zip(predictions, transitions)) / n,
        "reward_accuracy": sum(p.valid and p.reward == t.reward for p, t in zip(predictions, transitions)) / n,
        "done_accuracy": sum(p.valid and p.done == t.done for p, t in zip(predictions, transitions)) / n,
        "all_correct": sum(p.valid and (p.next_state, p.reward, p.done) == (t.next_state, t.reward, t.done)
                           for p, t in zip(predictions, transitions)) / n,
        "parse_error_rate": sum(not p.valid for p in predictions) / n,
        "copy_state_baseline": copy_state_accuracy(transitions),
        "n_transitions": float(len(transitions)),
    }


# ---- training ----------------------------------------------------------------------------------------
class WorldModelTrainConfig(TrainConfig, LoRAOptions):
    """The language model and its SFT run: a tiny one from scratch, or `--model` (the shared training options come
    from `TrainConfig`)."""

    out: Path = Field(Path("runs/world-model"), description="Run directory.")
    model: Path | None = Field(None, description="Pretrained causal LM to fine-tune instead of a tiny one from scratch: a model directory, a .gguf file or a LoRA adapter folder (merged first); its own tokenizer reads the transitions.")
    hidden_size: int = Field(128, ge=8, description="Width of the tiny world-model transformer (without --model).")
    num_layers: int = Field(4, ge=1, description="Transformer layers (without --model).")
    num_heads: int = Field(4, ge=1, description="Attention heads (without --model).")
    vocab_size: int = Field(400, ge=300, description="BPE vocabulary (byte alphabet + merges) trained on the transitions (without --model).")
    epochs: float = Field(25.0, gt=0, description="Passes over the training transitions (when --max-steps is not set).")
    batch_size: int = Field(16, ge=1, description="Transitions per optimizer step (a pretrained --model: 8).")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate of AdamW (a pretrained --model: 1e-4).")
    max_length: int | None = Field(None, ge=8, description="Longest prompt + completion in tokens (default: the longest transition's; a shorter one is an error: a truncated transition teaches a state without its reward and end).")
    log_every: int = Field(25, ge=1, description="Write metrics every N steps.")
    chat_template: Literal["off"] = Field("off", description="Transitions are plain text (the module's format), never chat-rendered, for any model.")
    end_repeats: int = Field(1, ge=1, description="Write each training transition that ends an episode this many times: steps that end are rare (about 1 in 8 on FrozenLake 4x4), so a model trained briefly answers 'done: no' to every step; repeating them is class-balanced resampling. Held-out transitions are never repeated. Default: 1, a pretrained --model 4.")
    spaced_cells: bool = Field(False, description="Write map rows with their cells separated by spaces: one token per cell for a pretrained BPE, which merges runs of cells unevenly (twice the tokens; on SmolLM2 and 8x8 maps it did not raise the next-state match after 3 epochs). The tiny model's BPE never merges map symbols.")

    # The tiny model learns the next state first and whether the step ends last (FrozenLake 4x4, 974 transitions,
    # batches of 16: after 600 steps next state 1.00 but "done" 0.89, its base rate, so a planner steps into holes;
    # after 1,500 steps, 25 passes, both 1.00 and the planner wins as often as on the true simulator).
    # A pretrained LM already reads text: a gentler step, and fewer passes than a model learning from nothing.
    # SmolLM2-135M on FrozenLake 4x4 (50 episodes, 319 transitions, held-out next state / tree-search wins of 10):
    # 3 passes in batches of 32: 0.150; 6 passes of 32: 0.512; 6 passes of 8: 0.862 but "done: no" to every step
    # that ends, 1/10 planned; ends written 4 times, 239 steps of 8 (4.4 passes of 433 rows): 0.838, reward 1.000, 7/10
    pretrained_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-4, "epochs": 4.5, "batch_size": 8, "end_repeats": 4}

    @model_validator(mode="after")
    def _lora_needs_a_model(self) -> WorldModelTrainConfig:
        if self.lora_rank and self.model is None:
            raise ValueError("--lora-rank adapts a pretrained --model; the tiny model from scratch trains every weight")
        return self


def _scratch_model(config: WorldModelTrainConfig, tokenizer, max_length: int, folder: Path) -> Path:
    """A new tiny LM reading `tokenizer`'s ids, saved with it in `folder`."""
    size = ModelSize(hidden_size=config.hidden_size, num_layers=config.num_layers, num_heads=config.num_heads,
                     num_kv_heads=config.num_heads, intermediate_size=3 * config.hidden_size,
                     vocab_size=len(tokenizer), max_positions=max(512, max_length))
    build_model(size, tokenizer, arch="llama", seed=config.seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def transition_length(config: WorldModelTrainConfig, tokenizer, rows: Sequence[dict[str, str]]) -> int:
    """The tokens the longest transition takes (prompt, completion, EOS): `config.max_length` when given, which must
    hold it (the SFT data path cuts a completion to fit, and a world model that never sees a transition's reward and
    end cannot predict them)."""
    longest = max(len(tokenizer(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]) for r in rows) + 1
    if config.max_length is not None and config.max_length < longest:
        raise ValueError(f"--max-length {config.max_length} cuts the longest transition ({longest} tokens with its EOS); "
                         f"give at least {longest}, or leave it unset")
    return config.max_length or longest


def train_world_model(
    config: WorldModelTrainConfig, train: Sequence[TextTransition], held_out: Sequence[TextTransition], action_list: Sequence[str],
    engine: str = "hf", env_spec: str | None = None,
) -> tuple[LMWorldModel, dict]:
    """Fine-tune a new tiny LM, or `config.model`, on `train` transitions with the SFT trainer; returns the world
    model (decoding on the generation `engine`: hf, or vllm started from the trained model's directory) and SFT
    metrics.

    Writes `train.jsonl` / `held_out.jsonl` (prompt/completion), the initial tiny model `init/` (without
    `config.model`) and the SFT run `lm/` (its `lm/model` is an ordinary Hugging Face directory, LoRA adapters
    merged, as `agent-rl --env worldmodel:` reads it) under `config.out`; beside its weights `FORMAT_FILE` records the
    text format, the longest completion to decode and `env_spec`, the agent env whose world this is (read back by
    `agent-rl --env worldmodel:RUN`).
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.model is not None and (changed := apply_model_defaults(config, model_origin(config.model))):
        print(f"[tandem] pretrained model {config.model}: {changed} (set them to override)", flush=True)
    spaced = config.spaced_cells
    train_rows, held_out_rows = sft_rows(train, spaced, config.end_repeats), sft_rows(held_out, spaced)
    for name, rows in (("train.jsonl", train_rows), ("held_out.jsonl", held_out_rows)):
        atomic_write_text(out / name, "".join(json.dumps(r) + "\n" for r in rows))
    rows = [*train_rows, *held_out_rows]
    if config.model is None:
        tokenizer = train_tokenizer(tokenizer_corpus(r["prompt"] + r["completion"] for r in train_rows),
                                    vocab_size=config.vocab_size)  # BPE learnt from the transitions' words
        max_length = transition_length(config, tokenizer, rows)
        init = _scratch_model(config, tokenizer, max_length, out / "init")
    else:
        init = config.model  # its defaults for what the user left unset were applied above
        max_length = transition_length(config, load_tokenizer(init), rows)
    shared = config.model_dump(include=set(TrainConfig.model_fields) - {"out", "max_length"})
    sft = SFTConfig(**shared, model=init, data=out / "train.jsonl", eval_data=out / "held_out.jsonl", out=out / "lm",
                    max_length=max_length, n_eval=0, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
                    merge_lora=True)
    result = run_sft(sft)
    model, tokenizer = load_causal_lm(result.model_dir), load_tokenizer(result.model_dir)
    longest = max(len(tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) for r in train_rows)
    saved = {"spaced_cells": spaced, "max_new_tokens": longest + 8, **({"env": env_spec} if env_spec else {})}
    atomic_write_text(Path(result.model_dir) / FORMAT_FILE, json.dumps(saved) + "\n")
    world_model = LMWorldModel(model, tokenizer, action_list, max_new_tokens=longest + 8,
                               engine=engine_for(engine, model, tokenizer, result.model_dir), spaced=spaced)
    return world_model, {"sft_steps": result.steps, "sft_seconds": result.seconds, "spaced_cells": spaced, **result.metrics}


def saved_format(folder: str | Path) -> dict[str, Any]:
    """The text format a world model saved by `train_world_model` reads and writes (plain cells when not recorded),
    the tokens its completions take (`max_new_tokens`) and, when recorded, the agent env it models (`env`)."""
    path = Path(folder) / FORMAT_FILE
    return {"spaced_cells": False, "max_new_tokens": 96, **(json.loads(path.read_text()) if path.exists() else {})}


def load_world_model(path: str | Path, names: list[str]):
    """The `LMWorldModel` of a `tandem world-model` run directory (its ``lm/model``) or of a model directory."""
    folder = world_model_folder(path)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no world model in {path}: give a `tandem world-model` run directory or a model directory")
    saved = saved_format(folder)
    return LMWorldModel(load_causal_lm(folder), load_tokenizer(folder), names, max_new_tokens=saved["max_new_tokens"],
                        spaced=saved["spaced_cells"])


def world_model_folder(path: str | Path) -> Path:
    path = Path(path)
    return path / "lm" / "model" if (path / "lm" / "model").is_dir() else path


# ---- a Gymnasium face on any transition model ----------------------------------------------------------
class WorldModelEnv(gym.Env):
    """The imagined environment of planning and Dyna: `step` asks the transition model (e.g. an `LMWorldModel`)
    what happens.

    `reset` starts from `options["state"]`, or from `initial_state(rng)` when given. A prediction that could
    not be read ends the episode (`terminated=True`, reward 0) with `info["error"]` set, is logged, and is
    counted in `n_errors`: a planner never continues from a state the model did not actually produce.
    """

    metadata = {"render_modes": []}

    def __init__(self, model, initial_state: Callable[[np.random.Generator], Any] | None = None):
        self.model = model
        self.initial_state = initial_state
        self.action_space = gym.spaces.Discrete(model.n_actions)
        self.observation_space = gym.spaces.Text(max_length=4096, charset=frozenset(map(chr, range(9, 127))))
        self.state: Any = None
        self.n_errors = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "state" in options:
            self.state = options["state"]
        elif self.initial_state is not None:
            self.state = self.initial_state(self.np_random)
        else:
            raise ValueError("WorldModelEnv.reset needs options={'state': ...} or an initial_state function")
        return self.state, {}

    def step(self, action: int):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        if not 0 <= int(action) < self.model.n_actions:
            raise ValueError(f"action {action} is outside 0..{self.model.n_actions - 1}")
        prediction = self.model.predict([self.state], [int(action)])[0]
        if not prediction.valid:
            self.n_errors += 1
            logger.warning("world model step ended the episode: %s", prediction.error)
            return self.state, 0.0, True, False, {"error": prediction.error}
        self.state = prediction.next_state
        return self.state, prediction.reward, prediction.done, False, {}
