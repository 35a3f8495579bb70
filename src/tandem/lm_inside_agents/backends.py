"""One small interface over the language models agents use, and its backends.

Every backend answers three questions about text renderings of states (`tandem.lm_inside_agents.render`):

- ``propose_action(env_text, action_names) -> int | None``: the action to take (the a_LLM of `tandem.lm_inside_agents.dqn`);
- ``predict_next_state(state_text, action_text) -> str``: the next state's rendering (a world model);
- ``rate_progress(state_text, goal_text) -> float`` in [0, 1]: progress towards the goal (the Phi of `shaping`).

Backends: `HFBackend` (a local Hugging Face causal-LM directory; actions and ratings are scored by log-probability,
never parsed from free text), `OpenAIBackend` (any OpenAI-compatible chat-completions endpoint, via httpx),
`FunctionBackend` (plain Python functions, e.g. `oracle_backend`, a noisy optimal policy standing in for an LM in
tests and benchmarks), and `train_demo_backend`, which fine-tunes a tiny tandem model on expert demonstrations
rendered as text and returns it as an `HFBackend`.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from tandem.lm_inside_agents.prompts import (
    action_completion,
    action_prompt,
    next_state_text,
    progress_completion,
    progress_prompt,
    transition_prompt,
)
from tandem.lm_inside_agents.render import action_names, goal_text, parse_action_name, render_state
from tandem.lm_inside_agents.shaping import non_terminal_states, q_value_iteration

class AgentLM(Protocol):
    """What an agent asks of a language model."""

    def propose_action(self, env_text: str, action_names: Sequence[str]) -> int | None: ...

    def predict_next_state(self, state_text: str, action_text: str) -> str: ...

    def rate_progress(self, state_text: str, goal_text: str) -> float: ...


def expected_digit_progress(digit_log_probs: Sequence[float]) -> float:
    """sum_d d/9 * softmax(log p)_d: the probability-weighted rating of digits 0-9, scaled to [0, 1]."""
    weights = torch.softmax(torch.as_tensor(digit_log_probs, dtype=torch.float64), dim=0)
    return float((weights * torch.arange(10, dtype=torch.float64)).sum() / 9.0)


# ---- (a) a local Hugging Face causal LM ------------------------------------------------------------------------
class HFBackend:
    """A Hugging Face causal LM (a directory, or a loaded model and tokenizer) answering by log-probabilities.

    `propose_action` returns argmax_a log p(" name_a" | prompt); `rate_progress` the probability-weighted digit
    0-9 (`expected_digit_progress`); `predict_next_state` greedy decoding of `transition_prompt`, the prompt an
    LM world model (`tandem.lm_inside_agents.world_model`) is trained on, keeping the next-state part of the answer
    (`next_state_text`). Answers are cached per prompt.
    """

    def __init__(self, model: Any, tokenizer: Any = None, max_new_tokens: int = 256, device: str | None = None,
                 engine: str = "hf"):
        # `engine` generates the next states (`tandem.generation.engines`; vllm starts from the directory, when asked)
        self.source = model if isinstance(model, (str, Path)) else None
        if isinstance(model, (str, Path)):
            from tandem.models.loading import load_causal_lm, load_tokenizer

            tokenizer, model = load_tokenizer(model), load_causal_lm(model)
        if tokenizer is None:
            raise ValueError("HFBackend needs a tokenizer when given a loaded model")
        self.model = model.to(device) if device else model
        self.model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.engine = engine
        self._generator = None
        self._cache: dict[tuple, Any] = {}

    def generator(self):
        """The generation engine, made on first use: on this model (hf), or from its directory (vllm)."""
        from tandem.generation.engines import engine_for

        if self._generator is None:
            self._generator = engine_for(self.engine, self.model, self.tokenizer, self.source)
        return self._generator

    @torch.no_grad()
    def completion_log_probs(self, prompt: str, completions: Sequence[str]) -> list[float]:
        """log p(completion | prompt) for each completion, summed over its tokens, in one batch."""
        from tandem.data.collate import pad_prompt_response_batch
        from tandem.generation.scoring import completion_log_probs

        key = ("score", prompt, tuple(completions))
        if key not in self._cache:
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            completion_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
            batch = pad_prompt_response_batch([prompt_ids] * len(completions), completion_ids, self.tokenizer.pad_token_id)
            device = next(self.model.parameters()).device
            sums, _ = completion_log_probs(self.model, {k: v.to(device) for k, v in batch.items()})
            self._cache[key] = sums.float().cpu().tolist()
        return self._cache[key]

    def propose_action(self, env_text: str, action_names: Sequence[str]) -> int | None:
        scores = self.completion_log_probs(action_prompt(env_text, action_names), [action_completion(n) for n in action_names])
        return int(np.argmax(scores))

    def predict_next_state(self, state_text: str, action_text: str) -> str:
        key = ("next", state_text, action_text)
        if key not in self._cache:
            prompt = transition_prompt(state_text, action_text)
            completion = self.generator().sample([prompt], max_new_tokens=self.max_new_tokens, temperature=0.0).texts[0]
            self._cache[key] = next_state_text(completion)
        return self._cache[key]

    def rate_progress(self, state_text: str, goal_text: str) -> float:
        digit_scores = self.completion_log_probs(progress_prompt(state_text, goal_text), [progress_completion(d) for d in range(10)])
        return expected_digit_progress(digit_scores)


# ---- (b) an OpenAI-compatible chat-completions endpoint ------------------------------------------------------
class EndpointError(RuntimeError):
    """The endpoint kept failing (connection errors, timeouts or 5xx/429 replies) after every retry."""


class OpenAIBackend:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp server, OpenAI...), called with httpx.

    Transport errors, timeouts, 429 and 5xx replies are retried `max_retries` times with exponential back-off;
    other 4xx replies raise at once. Replies are parsed with `parse_action_name` / the first digit; an unreadable
    reply gives None (propose_action) or 0.0 (rate_progress) and is counted in `unreadable`.
    """

    SYSTEM = "You control an agent in an environment described as text. Answer briefly, exactly as asked."

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        temperature: float = 0.0,
        max_tokens: int = 256,
        client: Any = None,
    ):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.unreadable = 0

    def chat(self, user_text: str) -> str:
        """The assistant's reply to one user message."""
        import httpx

        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": self.SYSTEM}, {"role": "user", "content": user_text}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                reply = self.client.post("/chat/completions", json=body)
            except httpx.TransportError as error:  # connection refused, timeouts
                last_error = error
                continue
            if reply.status_code == 429 or reply.status_code >= 500:
                last_error = EndpointError(f"HTTP {reply.status_code}: {reply.text[:200]}")
                continue
            if reply.status_code >= 400:
                raise EndpointError(f"{self.client.base_url}/chat/completions: HTTP {reply.status_code}: {reply.text[:200]}")
            try:
                return reply.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError) as error:
                raise EndpointError(f"unexpected reply from the endpoint: {reply.text[:200]}") from error
        raise EndpointError(f"{self.client.base_url}/chat/completions failed after {self.max_retries + 1} attempts: {last_error}")

    def propose_action(self, env_text: str, action_names: Sequence[str]) -> int | None:
        question = action_prompt(env_text, action_names) + "\nReply with one action name only."
        action = parse_action_name(self.chat(question), list(action_names))
        self.unreadable += action is None
        return action

    def predict_next_state(self, state_text: str, action_text: str) -> str:
        question = transition_prompt(state_text, action_text) + "\nReply with the next state only, in the same format."
        return next_state_text(self.chat(question))

    def rate_progress(self, state_text: str, goal_text: str) -> float:
        reply = self.chat(progress_prompt(state_text, goal_text) + "\nReply with one digit only.")
        match = re.search(r"\d", reply)
        if match is None:
            self.unreadable += 1
            return 0.0
        return int(match.group()) / 9.0


# ---- (c) Python functions --------------------------------------------------------------------------------------
class FunctionBackend:
    """Backends from plain functions with the interface's signatures; a missing one raises when called."""

    def __init__(
        self,
        propose: Callable[[str, Sequence[str]], int | None] | None = None,
        predict: Callable[[str, str], str] | None = None,
        rate: Callable[[str, str], float] | None = None,
        name: str = "function",
    ):
        self.propose, self.predict, self.rate, self.name = propose, predict, rate, name

    def _need(self, fn, what: str):
        if fn is None:
            raise NotImplementedError(f"the {self.name!r} backend was given no {what} function")
        return fn

    def propose_action(self, env_text: str, action_names: Sequence[str]) -> int | None:
        return self._need(self.propose, "propose")(env_text, action_names)

    def predict_next_state(self, state_text: str, action_text: str) -> str:
        return self._need(self.predict, "predict")(state_text, action_text)

    def rate_progress(self, state_text: str, goal_text: str) -> float:
        return float(min(1.0, max(0.0, self._need(self.rate, "rate")(state_text, goal_text))))


def tabular_expert(env: gym.Env, gamma: float = 0.99) -> tuple[dict[str, int], dict[str, float]]:
    """Optimal action and normalised optimal value V*/max V* of every state of a toy-text env, keyed by rendering.

    Solves `env.unwrapped.P` by value iteration (ties go to the lowest action id). Works for FrozenLake and Taxi.
    """
    base = env.unwrapped
    if not hasattr(base, "P"):
        raise ValueError(f"{type(base).__name__} has no tabular model P; tabular experts need a toy-text env")
    q = q_value_iteration(base.P, gamma)
    values = q.max(axis=1)
    low, high = values.min(), values.max()
    texts = [render_state(env, s) for s in range(len(base.P))]
    policy = {text: int(np.argmax(q[s])) for s, text in enumerate(texts)}
    progress = {text: float((values[s] - low) / (high - low)) if high > low else 0.0 for s, text in enumerate(texts)}
    return policy, progress


def oracle_backend(env: gym.Env, noise: float = 0.2, gamma: float = 0.99, seed: int = 0) -> FunctionBackend:
    """NOT a language model: an optimal tabular policy that answers a uniformly random action with prob. `noise`.

    A stand-in for a competent LM, so exploration and shaping run and are tested without any download.
    `rate_progress` is V*(s) normalised to [0, 1]. Unknown state texts give None / 0.0.
    """
    policy, progress = tabular_expert(env, gamma)
    rng = random.Random(seed)

    def propose(env_text: str, names: Sequence[str]) -> int | None:
        if rng.random() < noise:
            return rng.randrange(len(names))
        return policy.get(env_text)

    return FunctionBackend(propose=propose, rate=lambda text, goal: progress.get(text, 0.0), name=f"oracle(noise={noise})")


# ---- (d) a tiny tandem model trained on demonstrations --------------------------------------------------------
def expert_episodes(env: gym.Env, n_episodes: int, seed: int = 0, max_steps: int = 500) -> list[list[tuple[str, int]]]:
    """Expert (state text, action id) episodes: BabyAIBot on MiniGrid/BabyAI, the optimal policy on toy-text envs.

    Toy-text episodes start from a uniformly drawn non-terminal state (FrozenLake always resets to its start,
    which would cover one path only). Only successful episodes are kept; reset seeds are ``seed, seed + 1, ...``.
    """
    base = env.unwrapped
    toy_text = hasattr(base, "P")
    policy = tabular_expert(env)[0] if toy_text else None
    starts = non_terminal_states(base.P) if toy_text else []
    rng = random.Random(seed)
    episodes = []
    for index in range(n_episodes):
        obs, _ = env.reset(seed=seed + index)
        bot = None
        if toy_text:
            base.s = obs = rng.choice(starts)
        else:
            from minigrid.utils.baby_ai_bot import BabyAIBot

            bot = BabyAIBot(base)
        steps, reward, terminated = [], 0.0, False
        for _ in range(max_steps):
            text = render_state(env, obs)
            action = policy[text] if policy is not None else int(bot.replan())
            steps.append((text, action))
            obs, reward, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        if terminated and reward > 0:
            episodes.append(steps)
    return episodes


def steps_to_go_digit(steps_left: int, decay: float = 0.9) -> int:
    """Progress label round(9 * decay^(k - 1)) for a state k expert steps from success (9 = one step away)."""
    return round(9 * decay ** (steps_left - 1))


def demonstration_examples(
    episodes: Sequence[Sequence[tuple[str, int]]], names: Sequence[str], with_progress: bool = True
) -> list[dict]:
    """Prompt/completion SFT rows: (state -> expert action name) and, optionally, (state, goal -> progress digit).

    A state's progress label is `steps_to_go_digit` of the expert steps it still needed: a rating any environment's
    successful demonstrations provide, with no knowledge of its rewards. The goal is the state's `goal_text`.
    """
    rows = []
    for steps in episodes:
        for t, (text, action) in enumerate(steps):
            rows.append({"prompt": action_prompt(text, names), "completion": action_completion(names[action])})
            if with_progress:
                digit = steps_to_go_digit(len(steps) - t)
                rows.append({"prompt": progress_prompt(text, goal_text(text)), "completion": progress_completion(digit)})
    return rows


def train_demo_backend(
    env: gym.Env,
    out: Path,
    n_episodes: int = 200,
    steps: int = 300,
    size: str = "tiny",
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    with_progress: bool = True,
    progress_bar: bool = True,
    base_model: Path | None = None,
) -> HFBackend:
    """Fine-tune a model on expert demonstrations rendered as text; return it as an `HFBackend`.

    Without `base_model`, a new tiny tandem model (tokenizer trained on the demonstrations' text, `out/init`); with
    it, that pretrained checkpoint (a HF directory, .gguf or LoRA folder, with its own tokenizer): the same
    demonstrations warm-start a model that already knows language. Writes `out/demos.jsonl` (prompt/completion rows)
    and `out/sft/model` (the fine-tuned model), using `tandem.trainers.sft`.
    """
    from tandem.models.factory import MODEL_SIZES, build_model
    from tandem.models.loading import save_model
    from tandem.models.tokenizer import train_tokenizer
    from tandem.files import atomic_write_text

    out = Path(out)
    episodes = expert_episodes(env, n_episodes, seed=seed)
    if not episodes:
        raise ValueError(f"the expert solved none of {n_episodes} episodes of {env.spec.id if env.spec else env}")
    rows = demonstration_examples(episodes, action_names(env), with_progress)
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "demos.jsonl"
    atomic_write_text(data_path, "".join(json.dumps(r) + "\n" for r in rows))
    if base_model is not None:
        from tandem.models.loading import load_tokenizer

        longest = max(len(load_tokenizer(base_model)(r["prompt"] + r["completion"])["input_ids"]) for r in rows) + 1
        return _demo_sft(out, base_model, data_path, rows, steps, batch_size, lr, seed, longest, progress_bar)
    model_size = MODEL_SIZES[size]
    tokenizer = train_tokenizer((r["prompt"] + r["completion"] for r in rows), vocab_size=model_size.vocab_size)
    longest = max(len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) for r in rows) + 1
    model = build_model(model_size, tokenizer, seed=seed)
    save_model(model, tokenizer, out / "init")
    return _demo_sft(out, out / "init", data_path, rows, steps, batch_size, lr, seed, longest, progress_bar)


def _demo_sft(out: Path, model: Path, data: Path, rows: list, steps: int, batch_size: int, lr: float, seed: int,
              longest: int, progress_bar: bool) -> HFBackend:
    from tandem.trainers.sft import SFTConfig, run_sft

    config = SFTConfig(
        out=out / "sft", model=model, data=data, eval_fraction=0.0, max_steps=steps, chat_template="off",
        batch_size=min(batch_size, len(rows)), micro_batch_size=min(batch_size, len(rows)), lr=lr, seed=seed,
        max_length=max(longest, 8), progress=progress_bar, log_every=max(1, steps // 10),
    )
    return HFBackend(run_sft(config).model_dir)


def action_agreement(backend: AgentLM, env: gym.Env, episodes: Sequence[Sequence[tuple[str, int]]]) -> float:
    """Fraction of expert (state, action) pairs where `backend` proposes the expert's action."""
    names = action_names(env)
    pairs = [pair for steps in episodes for pair in steps]
    return sum(backend.propose_action(text, names) == action for text, action in pairs) / max(len(pairs), 1)
