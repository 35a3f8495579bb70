"""Demonstrations for a warm start: expert episodes rendered exactly as RL renders its own.

A small instruct model rarely names a valid action in an unfamiliar text game, so RL from it has nothing to
compare (every episode fails alike). Behaviour cloning on demonstrations first, then RL, is the recipe of
RAGEN's and verl-agent's SFT stage and of Ouyang et al. 2022 (SFT before RL). Here a demonstration is an
episode played by an expert through the same `play_text_episodes` that RL uses, with the expert in place of the model:
the same chat template, history layout, observation asks and masks, so supervised and RL training see the
same token ids. The loss is the next-token NLL on the assistant turns only (RL's loss mask).

Experts: FrozenLake's shortest path around the holes, BabyAI's `BabyAIBot` (Chevalier-Boisvert et al. 2019),
the corridor's walk to the right, a single-turn task's reference answer, a calculator call then the answer for
arithmetic with tools, binary search in TextArena's GuessTheNumber, TextWorld's walkthrough. ``epsilon`` replaces each expert action
by a uniformly random one with that probability, so the cloned policy is imperfect and RL has room to improve.
Your own: a JSONL file of episodes in the chat ``messages`` format (system, user, assistant, user, ...).
"""

from __future__ import annotations

import json
import random
import re
from collections import deque
from collections.abc import Callable
from pathlib import Path

from tandem.lm_as_agent.env import Corridor, EnvSuite, GymTextEnv, TaskEnv, TextEnv
from tandem.lm_as_agent.rollout import ChatFormat, Episode, RolloutOptions, Turn, play_text_episodes
from tandem.generation.rollout import SampledRow, SamplingConfig

EXPERTS: list[tuple[Callable[[TextEnv], bool], Callable[[TextEnv], Callable[[], str]]]] = []


def expert(applies: Callable[[TextEnv], bool]):
    """Register `make(env) -> act()`: an expert for the envs `applies` accepts; `act` is made at each reset."""
    def register(make):
        EXPERTS.append((applies, make))
        return make
    return register


def _unwrapped(env: TextEnv):
    return env.env.unwrapped if isinstance(env, GymTextEnv) else None


def frozen_lake_path(desc, start: int) -> list[int]:
    """Actions (0 left, 1 down, 2 right, 3 up) of a shortest path from `start` to G that avoids holes (BFS)."""
    rows, cols = len(desc), len(desc[0])

    def cell(state: int) -> str:
        value = desc[state // cols][state % cols]
        return value.decode() if isinstance(value, bytes) else str(value)

    moves = ((0, 0, -1), (1, 1, 0), (2, 0, 1), (3, -1, 0))
    previous = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        if cell(state) == "G":
            path = []
            while previous[state] is not None:
                state, action = previous[state]
                path.append(action)
            return path[::-1]
        row, col = divmod(state, cols)
        for action, dr, dc in moves:
            r, c = row + dr, col + dc
            if 0 <= r < rows and 0 <= c < cols and (nxt := r * cols + c) not in previous and cell(nxt) != "H":
                previous[nxt] = (state, action)
                queue.append(nxt)
    raise ValueError("no path to the goal on this FrozenLake map")


@expert(lambda env: type(_unwrapped(env)).__name__ == "FrozenLakeEnv")
def _frozen_lake_expert(env: GymTextEnv) -> Callable[[], str]:
    def act() -> str:
        lake = _unwrapped(env)
        return env.names[frozen_lake_path(lake.desc, int(lake.s))[0]]
    return act


def _is_minigrid(env: TextEnv) -> bool:
    from minigrid.minigrid_env import MiniGridEnv

    return isinstance(_unwrapped(env), MiniGridEnv)


@expert(_is_minigrid)
def _babyai_expert(env: GymTextEnv) -> Callable[[], str]:
    from minigrid.utils.baby_ai_bot import BabyAIBot

    bot = BabyAIBot(_unwrapped(env))
    return lambda: env.names[int(bot.replan())]


@expert(lambda env: isinstance(env, Corridor))
def _corridor_expert(env: Corridor) -> Callable[[], str]:
    return lambda: "right"


@expert(lambda env: isinstance(env, TaskEnv))
def _task_expert(env: TaskEnv) -> Callable[[], str]:
    answer = env.answers[env.index]
    if answer is None:
        raise ValueError("this task's held-out rows carry no reference answer to demonstrate")
    return lambda: str(answer)


def _calculator_task(env: TextEnv) -> bool:
    from tandem.lm_as_agent.tools import ToolEnv

    return isinstance(env, ToolEnv) and "calculator" in env.tools and isinstance(env.env, TaskEnv)


_EXPRESSION = re.compile(r"\d[\d\s.+\-*/%()]*[+\-*/%][\d\s.+\-*/%()]*\d")


@expert(_calculator_task)
def _calculator_expert(env) -> Callable[[], str]:
    """A tool task's expert: one calculator call on the question's expression, then its result as the answer, in
    the task's answer format (the task's own demonstrations may carry deliberate errors)."""
    found = _EXPRESSION.findall(str(env.env.row["prompt"]))
    if not found:
        raise ValueError("this tool task's question holds no arithmetic expression to demonstrate")
    expression = max(found, key=len).strip()
    value, failed = env.tools["calculator"].run({"expression": expression})
    if failed:
        raise ValueError(f"the calculator cannot evaluate {expression!r}: {value}")
    call = f'<tool_call>{json.dumps({"name": "calculator", "arguments": {"expression": expression}})}</tool_call>'
    replies = iter([call])
    return lambda: next(replies, f"{expression} = {value}\n#### {value}")


def _textarena_game(env: TextEnv):
    game = getattr(env, "env", None)
    return getattr(game, "unwrapped", game)


def _guess_the_number(env: TextEnv) -> bool:
    return type(_textarena_game(env)).__name__ == "GuessTheNumberEnv"


@expert(_guess_the_number)
def _guess_the_number_expert(env) -> Callable[[], str]:
    """Binary search on the game's own record of the guesses so far and their hints."""
    game = _textarena_game(env)

    def act() -> str:
        low, high = getattr(game, "min_number", 1), getattr(game, "max_number", 20)
        for guess, hint in game.state.game_state.get("guess_history", []):
            low, high = (max(low, guess + 1), high) if hint == "higher" else (low, min(high, guess - 1))
        return f"[{(low + high) // 2}]"
    return act


@expert(lambda env: type(env).__name__ == "TextWorldEnv")
def _textworld_expert(env) -> Callable[[], str]:
    """TextWorld's walkthrough from the current state (its ``policy_commands``)."""
    return lambda: (env.walkthrough() or ["look"])[0]


def make_expert(env: TextEnv) -> Callable[[], str]:
    """The registered expert's policy for `env`'s current episode (call after `reset`)."""
    for applies, make in EXPERTS:
        if applies(env):
            return make(env)
    raise ValueError(f"no built-in expert for {type(env).__name__}; give demonstrations as a JSONL file of episodes "
                     "in the messages format (--demonstrations FILE.jsonl)")


def expert_sampler(fmt: ChatFormat, envs: list[TextEnv], epsilon: float, seed: int):
    """A `Sampler` whose replies are the expert's actions (a random valid action with probability `epsilon`),
    written as the model would write them (`ChatFormat.reply_ids`), with log-prob 0."""
    rng = random.Random(seed)
    policies: dict[int, Callable[[], str]] = {}

    def sample(prompts, places) -> list[SampledRow]:
        rows = []
        for episode, turn in places:  # the expert reads the env, not the prompt
            env = envs[episode]
            if turn == 0 or episode not in policies:
                policies[episode] = make_expert(env)
            names = getattr(env, "names", None)
            action = rng.choice(names) if names and rng.random() < epsilon else policies[episode]()
            ids = fmt.reply_ids(action)
            rows.append(SampledRow(ids, [0.0] * len(ids), True, action))
        return rows
    return sample


def expert_episodes(suite: EnvSuite, fmt: ChatFormat, tokenizer, n: int, options: RolloutOptions,
                    epsilon: float = 0.0, seed: int = 0, first_seed: int = 0, batch: int = 64) -> list[Episode]:
    """`n` episodes of the (epsilon-noisy) expert on training start states `first_seed`, `first_seed + 1`, ..."""
    episodes: list[Episode] = []
    for start in range(0, n, batch):
        seeds = list(range(first_seed + start, first_seed + min(n, start + batch)))
        envs = [suite.make("train") for _ in seeds]
        sampler = expert_sampler(fmt, envs, epsilon, seed * 7_919 + start)
        episodes += play_text_episodes(None, tokenizer, fmt, envs, seeds, seeds, SamplingConfig(max_new_tokens=1), options,
                                 sampler=sampler)
    return episodes


def episodes_from_messages(path: Path, fmt: ChatFormat) -> list[Episode]:
    """Episodes from a JSONL file, one ``{"messages": [...]}`` per line: an optional system message, then user and
    assistant turns (tool messages answer a tool call). Rendered with `fmt` as RL renders its episodes."""
    episodes = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            messages = json.loads(line)["messages"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{where}, field 'messages': expected a JSON object with a list of messages ({error})") from None
        episodes.append(_episode_from_messages(messages, fmt, where))
    if not episodes:
        raise ValueError(f"{path}: no episodes")
    return episodes


def _episode_from_messages(messages: list, fmt: ChatFormat, where: str) -> Episode:
    for k, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "tool") \
                or not isinstance(message.get("content"), str):
            raise ValueError(f"{where}, field 'messages[{k}]': expected {{role: system|user|assistant|tool, content: str}}")
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    rest = messages[1:] if system else messages
    if len(rest) < 2 or rest[0]["role"] != "user" or rest[1]["role"] != "assistant":
        raise ValueError(f"{where}, field 'messages': an episode starts with a user turn and an assistant reply")
    episode = Episode(seed=-1, group=-1, system=system, first_observation=rest[0]["content"])
    episode.ids = fmt.start(system, rest[0]["content"])
    episode.assistant_mask, episode.sampled_log_probs = [0] * len(episode.ids), [0.0] * len(episode.ids)
    episode.turn_of_token = [-1] * len(episode.ids)
    observation, role = rest[0]["content"], "user"
    for k, message in enumerate(rest[1:], start=1):
        if message["role"] != "assistant":
            observation, role = message["content"], message["role"]
            following = fmt.after_turn(observation, role, episode.turns[-1].action_ids)
            episode.ids += following
            episode.assistant_mask += [0] * len(following)
            episode.sampled_log_probs += [0.0] * len(following)
            episode.turn_of_token += [-1] * len(following)
            continue
        if rest[k - 1]["role"] == "assistant":
            raise ValueError(f"{where}, field 'messages[{k}]': two assistant turns in a row")
        ids = fmt.reply_ids(message["content"])
        prompt = fmt.start(system, observation)
        episode.turns.append(Turn(prompt, len(prompt), ids, [0.0] * len(ids), message["content"], True, role=role))
        episode.ids += ids
        episode.assistant_mask += [1] * len(ids)
        episode.sampled_log_probs += [0.0] * len(ids)
        episode.turn_of_token += [len(episode.turns) - 1] * len(ids)
    episode.done = True
    return episode


def sft_examples(episodes: list[Episode], history: str) -> list[dict]:
    """Supervised examples (`input_ids`, `completion_mask`: 1 on the assistant's tokens) of episodes, one per
    episode (history full) or per turn (history none): the rows RL would train on, as `tandem sft` takes them."""
    from tandem.lm_as_agent.rollout import episode_batch

    batch = episode_batch(episodes, history, pad_token_id=0)
    lengths = batch.attention_mask.sum(-1).tolist()
    return [{"input_ids": batch.input_ids[k, :n].tolist(), "completion_mask": batch.completion_mask[k, :n].tolist()}
            for k, n in enumerate(lengths)]
