"""Multi-turn rollouts: every active episode of a batch generates its next turn in one batched call.

An episode is a chat: system (the env's instructions), user (observation), assistant (the model's action),
user or tool (the env's answer), ... Its token ids are built by appending, turn by turn, exactly the ids the
model sampled and the template's rendering of the env's answer, so the ids trained on are the ids sampled:
the model's own text is never decoded and re-tokenised (re-tokenisation changes ids at word boundaries,
the train/rollout mismatch multi-turn RL users of rLLM and verl run into). `assistant_mask` is 1 exactly on
sampled tokens, the only tokens that carry loss.

Two layouts (`history`): ``full`` keeps the whole conversation in context (one training row per episode);
``none`` shows each turn only the instructions and the current observation (one row per turn: enough for
Markov worlds such as FrozenLake or BabyAI rendered in full, and far cheaper in context).

A model without a chat template (tandem's tiny models) uses `PlainFormat`: ``instructions\\n\\nobservation\\n
action:`` with the reply ending at a newline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from tandem.lm_as_agent.env import EnvError, StepResult, TextEnv, prefetch_steps
from tandem.generation.rollout import RolloutBatch, SampledRow, SamplingConfig, sample_ids
from tandem.generation.prefix import KeptPrefix
from tandem.generation.turn_cache import TurnCache, can_keep
from tandem.generation.sampling import end_of_turn_ids

# answers the active episodes' prompts (token ids) given each one's (episode index, turn index), one reply each
Sampler = Callable[[list[list[int]], list[tuple[int, int]]], list[SampledRow]]

_SENTINEL = "\u2063TANDEM_TURN\u2063"  # an assistant message the template renders verbatim; found, then cut out


class ChatFormat:
    """How turns become token ids: `start(system, observation)` and `after_turn(observation, role, action_ids)`."""

    stop_strings: list[str] = []

    def start(self, system: str, observation: str, tools: list[dict] | None = None) -> list[int]:
        raise NotImplementedError

    def prepare(self, env: TextEnv) -> list[dict] | None:
        """Let an env with tools describe them through the chat template; the tool schemas to render, or None."""
        return None

    def reply_ids(self, text: str) -> list[int]:
        """The ids of a reply `text` as the model would write it, closing the turn (demonstrations)."""
        raise NotImplementedError

    def after_turn(self, observation: str, role: str, action_ids: list[int]) -> list[int]:
        """Ids between the end of an assistant turn (its sampled `action_ids`) and the start of the next one: the
        env's answer, after whatever closes the turn when the model did not (a reply cut at the length limit)."""
        raise NotImplementedError


class TemplateFormat(ChatFormat):
    """The tokenizer's chat template; the env's answer is rendered as the template renders a following message.

    The ids after an assistant turn are the template's text between the end-of-turn token that closes an
    assistant message and the next generation prompt, found once by rendering a sentinel message. A turn cut
    at the length limit is closed with the end-of-turn token first (it carries no loss).
    """

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; use PlainFormat")
        self.tokenizer = tokenizer
        eot = sorted(end_of_turn_ids(tokenizer)) or ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
        if not eot:
            raise ValueError("the tokenizer has neither an end-of-turn nor an EOS token")
        self.end_of_turn, self.closing = eot[0], set(eot) | ({tokenizer.eos_token_id} - {None})
        self.end_of_turn_text = tokenizer.convert_ids_to_tokens(self.end_of_turn)
        self._tool_role = self._renders_role("tool")

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def _renders_role(self, role: str) -> bool:
        try:
            text = self._render([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                 {"role": role, "content": _SENTINEL}], True)
        except Exception:  # noqa: BLE001 - templates raise on roles they do not know
            return False
        return _SENTINEL in text

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def start(self, system: str, observation: str, tools: list[dict] | None = None) -> list[int]:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": observation}]
        if tools:
            return self._ids(self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                                add_generation_prompt=True))
        return self._ids(self._render(messages, True))

    def reply_ids(self, text: str) -> list[int]:
        return self._ids(text) + [self.end_of_turn]

    def prepare(self, env: TextEnv) -> list[dict] | None:
        use_template = getattr(env, "use_chat_template", None)
        return env.chat_tools if use_template is not None and use_template(self.tokenizer) else None

    def after_turn(self, observation: str, role: str, action_ids: list[int]) -> list[int]:
        if role == "tool" and not self._tool_role:
            role, observation = "user", f"tool result:\n{observation}"
        messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": _SENTINEL}]
        text = self._render(messages + [{"role": role, "content": observation}], True)
        tail = text[text.index(_SENTINEL) + len(_SENTINEL):]
        if not tail.startswith(self.end_of_turn_text):
            raise ValueError(f"the chat template does not close an assistant message with {self.end_of_turn_text!r}")
        ids = self._ids(tail[len(self.end_of_turn_text):])
        closed = bool(action_ids) and action_ids[-1] in self.closing
        return ids if closed else [self.end_of_turn] + ids


class PlainFormat(ChatFormat):
    """No chat template: ``instructions\\n\\nobservation\\naction:``, the reply ending at a newline."""

    stop_strings = ["\n"]

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def start(self, system: str, observation: str, tools: list[dict] | None = None) -> list[int]:
        return self._ids(f"{system}\n\n{observation}\naction:" if system else f"{observation}\naction:")

    def reply_ids(self, text: str) -> list[int]:
        return self._ids(f" {text}\n")

    def after_turn(self, observation: str, role: str, action_ids: list[int]) -> list[int]:
        label = "tool result" if role == "tool" else "observation"
        closed = self.tokenizer.decode(action_ids).endswith("\n")
        return self._ids(f"{'' if closed else chr(10)}{label}:\n{observation}\naction:")


def chat_format(tokenizer, chat: bool) -> ChatFormat:
    return TemplateFormat(tokenizer) if chat else PlainFormat(tokenizer)


@dataclass
class Turn:
    prompt_ids: list[int]       # history none: what the model saw (instructions + observation); full: empty
    prompt_length: int          # tokens the model saw before this turn
    action_ids: list[int]       # exactly the sampled ids
    log_probs: list[float]      # their log-probs when sampled
    action: str                 # decoded text given to the env
    ended: bool                 # the reply ended (stop token / string), not cut at --max-new-tokens
    reward: float = 0.0         # the env's reward for this action (plus shaping, when on)
    env_reward: float = 0.0     # the env's reward alone
    observation: str = ""       # what came back
    role: str = "user"
    invalid: bool = False
    tool: bool = False


@dataclass
class Episode:
    """One episode: its turns, and (history full) the whole conversation's ids and loss mask."""

    seed: int
    group: int                                   # episodes of one group start from the same state
    system: str
    first_observation: str
    turns: list[Turn] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)            # history full: the conversation so far
    assistant_mask: list[int] = field(default_factory=list)  # 1 on sampled tokens
    sampled_log_probs: list[float] = field(default_factory=list)
    turn_of_token: list[int] = field(default_factory=list)   # index of the turn each token belongs to (-1: not the model's)
    done: bool = False
    truncated: bool = False
    truncation: str = ""                         # why: max_turns / context / env
    success: bool = False
    observation: str = ""                        # the current observation
    role: str = "user"
    tools: list[dict] | None = None              # tool schemas the chat template renders (ToolEnv)

    @property
    def env_return(self) -> float:
        return sum(t.env_reward for t in self.turns)

    @property
    def total_reward(self) -> float:
        return sum(t.reward for t in self.turns)

    @property
    def invalid_actions(self) -> int:
        return sum(t.invalid for t in self.turns)

    def transcript(self) -> str:
        lines = [f"# seed {self.seed} | return {self.env_return:g} | success {self.success} | turns {len(self.turns)}"
                 + (f" | truncated ({self.truncation})" if self.truncated else ""),
                 f"[system]\n{self.system}", f"[user]\n{self.first_observation}"]
        for turn in self.turns:
            flags = " (invalid)" if turn.invalid else (" (cut at the length limit)" if not turn.ended else "")
            lines.append(f"[assistant]{flags}\n{turn.action}")
            lines.append(f"[{turn.role}] reward {turn.env_reward:g}\n{turn.observation}")
        return "\n".join(lines) + "\n"


@dataclass
class RolloutOptions:
    max_turns: int = 16
    max_context: int = 4096          # tokens an episode may hold (history full); a longer one is truncated
    history: Literal["full", "none"] = "full"


def _prompt_for(episode: Episode, env: TextEnv, fmt: ChatFormat, history: str) -> list[int]:
    if history == "full":
        return episode.ids
    return fmt.start(episode.system, user_message(env, episode.observation, episode.role), episode.tools)


def _safe(call, what: str, episode: Episode) -> Any:
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - an env's failure is reported with where it happened
        raise EnvError(f"the environment raised during {what} (episode seed {episode.seed}, turn "
                       f"{len(episode.turns) + 1}): {type(error).__name__}: {error}") from error


def episode_sampling(sampling: SamplingConfig, fmt: ChatFormat) -> SamplingConfig:
    """The sampling of a turn: the caller's, with the format's stop strings (a plain reply ends at a newline)."""
    stop_strings = list(dict.fromkeys(list(sampling.stop_strings) + fmt.stop_strings))
    return SamplingConfig(max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                          top_p=sampling.top_p, top_k=sampling.top_k, stop_strings=stop_strings)


def model_sampler(model, tokenizer, config: SamplingConfig, engine=None, key_base: int | None = None,
                  keep_cache: bool = False, keep_instructions: bool = True, graph=None) -> Sampler:
    """The policy as a `Sampler`: every active episode's next turn in one call, of `engine` (`sample_ids`) when
    given, else `generate` on `model`. With `key_base`, each turn's draws are keyed by (episode, turn): an
    episode's replies depend on its place in the batch alone, not on the torch RNG or the other episodes.
    `keep_cache` (for prompts that are whole conversations, history full): `generate` keeps each episode's KV
    cache from one turn to the next (`tandem.generation.turn_cache`). Make one sampler per rollout: the caches it
    keeps (that one, and with `keep_instructions` the keys and values of the instructions every turn starts with,
    `tandem.generation.prefix.KeptPrefix`) hold the weights of the moment. `graph` (a
    `tandem.generation.prefill_graph.PrefillGraph`): each prompt's prefill is kept with its autograd graph, for the
    update that follows on the same weights."""
    turns = TurnCache(getattr(model, "generation_model", model), tokenizer.pad_token_id) \
        if keep_cache and engine is None and can_keep(getattr(model, "generation_model", model)) else None
    kept = KeptPrefix() if keep_instructions else None  # the instructions, computed once per rollout

    def sample(prompts: list[list[int]], places: list[tuple[int, int]]) -> list[SampledRow]:
        keys = None if key_base is None else torch.tensor([key_base + 4099 * e + t for e, t in places])
        if engine is not None:
            return engine.sample_ids(prompts, config, keys)
        return sample_ids(model, tokenizer, prompts, config, keys, turns=turns, owners=[e for e, _ in places], kept=kept,
                          graph=graph)
    sample.turns, sample.kept = turns, kept  # what the kept caches saved shows in their `computed_tokens`
    return sample


def user_message(env: TextEnv, observation: str, role: str) -> str:
    """What the model reads after an observation: the observation, then the env's ask for one action (`TextEnv.ask`,
    empty for envs whose observations already ask), so an instruct model answers with an action, not a greeting."""
    ask = getattr(env, "ask", "")
    return f"{observation}\n\n{ask}" if ask and role == "user" else observation


@torch.no_grad()
def play_text_episodes(model, tokenizer, fmt: ChatFormat, envs: list[TextEnv], seeds: list[int], groups: list[int],
                 sampling: SamplingConfig, options: RolloutOptions, shaping=None, gamma: float = 1.0,
                 timings: dict | None = None, sampler: Sampler | None = None) -> list[Episode]:
    """Play one episode in each env (reset with its seed), all active episodes sampling their turns together.

    `sampler` (default: `generate` on `model`) answers the active episodes' prompts, one `SampledRow` each: the
    policy, an engine, or an expert (`tandem.lm_as_agent.demonstrations`). `shaping(observation) -> float`, when
    given, adds gamma Phi(s') - Phi(s) to each turn's reward (Ng et al. 1999; Phi = 0 after the last state), so
    the optimal policy is unchanged while the model's rating of progress guides it.
    """
    config = episode_sampling(sampling, fmt)
    sampler = sampler or model_sampler(model, tokenizer, config, keep_cache=options.history == "full")
    episodes = []
    for env, seed, group in zip(envs, seeds, groups):
        tools = fmt.prepare(env)
        episode = Episode(seed=seed, group=group, system=env.instructions, first_observation="", tools=tools)
        episode.observation = episode.first_observation = _safe(lambda: env.reset(seed=seed), "reset", episode)
        episode.ids = fmt.start(episode.system, user_message(env, episode.observation, "user"), tools)
        episode.assistant_mask = [0] * len(episode.ids)
        episode.sampled_log_probs = [0.0] * len(episode.ids)
        episode.turn_of_token = [-1] * len(episode.ids)
        episodes.append(episode)
    potentials = [shaping(e.observation) if shaping else 0.0 for e in episodes]
    timings = timings if timings is not None else {}
    while True:
        active = [i for i, e in enumerate(episodes) if not e.done]
        for i in active:  # the context budget: an episode that cannot fit another reply ends here
            if options.history == "full" and len(episodes[i].ids) + config.max_new_tokens > options.max_context:
                episodes[i].done, episodes[i].truncated, episodes[i].truncation = True, True, "context"
        active = [i for i in active if not episodes[i].done]
        if not active:
            break
        prompts = [_prompt_for(episodes[i], envs[i], fmt, options.history) for i in active]
        t0 = time.perf_counter()
        rows = sampler(prompts, [(i, len(episodes[i].turns)) for i in active])
        timings["generate"] = timings.get("generate", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        prefetch_steps([envs[i] for i in active], [row.text for row in rows])
        for i, prompt, row in zip(active, prompts, rows):
            episode, env = episodes[i], envs[i]
            result: StepResult = _safe(lambda: env.step(row.text), "step", episode)
            turn = Turn(prompt_ids=list(prompt) if options.history == "none" else [], prompt_length=len(prompt),
                        action_ids=row.tokens, log_probs=row.log_probs, action=row.text,
                        ended=row.ended, env_reward=float(result.reward), observation=result.observation,
                        role=result.info.get("role", "user"), invalid=bool(result.info.get("invalid_action", False)),
                        tool=result.info.get("role") == "tool")
            ended_episode = result.terminated or result.truncated
            potential = 0.0 if result.terminated else (shaping(result.observation) if shaping else 0.0)
            turn.reward = turn.env_reward + (gamma * potential - potentials[i] if shaping else 0.0)
            potentials[i] = potential
            index = len(episode.turns)
            episode.turns.append(turn)
            episode.ids += row.tokens
            episode.assistant_mask += [1] * len(row.tokens)
            episode.sampled_log_probs += row.log_probs
            episode.turn_of_token += [index] * len(row.tokens)
            episode.observation, episode.role = result.observation, turn.role
            if ended_episode:
                episode.done, episode.success = True, bool(result.info.get("success", False))
                if result.truncated and not result.terminated:
                    episode.truncated, episode.truncation = True, "env"
            elif len(episode.turns) >= options.max_turns:
                episode.done, episode.truncated, episode.truncation = True, True, "max_turns"
            if not episode.done and options.history == "full":
                following = fmt.after_turn(user_message(env, result.observation, turn.role), turn.role, row.tokens)
                episode.ids += following
                episode.assistant_mask += [0] * len(following)
                episode.sampled_log_probs += [0.0] * len(following)
                episode.turn_of_token += [-1] * len(following)
        timings["env"] = timings.get("env", 0.0) + time.perf_counter() - t0
    return episodes


def episode_batch(episodes: list[Episode], history: str, pad_token_id: int) -> RolloutBatch:
    """Episodes as training rows of the one RL trainer: one row per episode (history full: the whole conversation,
    loss on the sampled tokens only) or per turn (history none: what the model saw, then its reply).

    `step_rewards` holds each turn's reward on the turn's last sampled token (a row's score is their sum: the
    episode's return, or with history none the turn's reward); `sample_ids` the episode of each row and `next_row`
    the row of the episode's next turn (history none), so group advantages score each episode once, by its
    return, and a critic bootstraps across turns.
    """
    rows: list[tuple[list[int], list[int], list[float], list[float]]] = []
    owners: list[int] = []
    next_row: list[int] = []
    for e_index, episode in enumerate(episodes):
        if history == "full":
            # drop the trailing env answer: nothing after the last sampled token trains
            end = max((k + 1 for k, m in enumerate(episode.assistant_mask) if m), default=len(episode.ids))
            earned = [0.0] * end
            for k in range(end):
                turn = episode.turn_of_token[k]
                if turn >= 0 and (k + 1 == end or episode.turn_of_token[k + 1] != turn):
                    earned[k] = episode.turns[turn].reward
            rows.append((episode.ids[:end], episode.assistant_mask[:end], episode.sampled_log_probs[:end], earned))
            owners.append(e_index)
            next_row.append(-1)
            continue
        for t_index, turn in enumerate(episode.turns):
            n_prompt, n_action = len(turn.prompt_ids), len(turn.action_ids)
            earned = [0.0] * (n_prompt + n_action)
            earned[-1] = turn.reward
            rows.append((turn.prompt_ids + turn.action_ids, [0] * n_prompt + [1] * n_action,
                         [0.0] * n_prompt + turn.log_probs, earned))
            owners.append(e_index)
            next_row.append(len(rows) if t_index + 1 < len(episode.turns) else -1)
    width = max(len(r[0]) for r in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    loss_mask = torch.zeros((n, width), dtype=torch.long)
    log_probs = torch.zeros((n, width), dtype=torch.float32)
    step_rewards = torch.zeros((n, width), dtype=torch.float32)
    for k, (ids, mask, lp, earned) in enumerate(rows):
        length = len(ids)
        input_ids[k, :length] = torch.tensor(ids)
        attention[k, :length] = 1
        loss_mask[k, :length] = torch.tensor(mask)
        log_probs[k, :length] = torch.tensor(lp)
        step_rewards[k, :length] = torch.tensor(earned)
    owner = torch.tensor(owners)
    per_turn = history != "full"
    texts = [[t.action for t in e.turns] for e in episodes]
    return RolloutBatch(
        prompts=[episodes[e].system for e in owners],
        completions=["\n".join(texts[e]) for e in owners],
        input_ids=input_ids, attention_mask=attention, completion_mask=loss_mask, sampled_log_probs=log_probs,
        ended=torch.tensor([all(t.ended for t in episodes[e].turns) for e in owners]),
        group_ids=torch.tensor([episodes[e].group for e in owners]),
        step_rewards=step_rewards,
        sample_ids=owner if per_turn else None,
        next_row=torch.tensor(next_row) if per_turn else None,
    )
