"""A tiny policy to start agent RL from when no pretrained model is given (``--model tiny``).

RL needs replies it can score: a randomly initialised model writes no action at all, so every episode ties
and there is nothing to learn. This builds a tiny Llama (tokenizer trained on the environment's own text) and
behaviour-clones a uniformly random policy over valid action names on observations from random play: a
starting policy that acts validly but knows nothing of the task, so what RL adds is measurable.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from tandem.lm_as_agent.env import EnvSuite, TextEnv
from tandem.lm_as_agent.rollout import PlainFormat, user_message


def _action_names(env: TextEnv) -> list[str]:
    names = getattr(env, "names", None)
    if not names:
        raise ValueError(f"--model tiny needs an environment with named actions; {type(env).__name__} has none: "
                         "give a pretrained --model")
    return list(names)


def random_play(suite: EnvSuite, n_states: int, seed: int = 0, max_turns: int = 16) -> list[str]:
    """Observations (with the instructions) met by a uniformly random policy on training start states."""
    env, rng = suite.make("train"), random.Random(seed)
    names = _action_names(env)
    observations: list[str] = []
    episode = 0
    while len(observations) < n_states:
        observations.append(env.reset(seed=episode))
        for _ in range(max_turns):
            result = env.step(rng.choice(names))
            if result.terminated or result.truncated:
                break
            observations.append(result.observation)
        episode += 1
    return observations[:n_states]


def build_random_policy(suite: EnvSuite, out: str | Path, n_states: int = 300, steps: int = 60, seed: int = 0,
                        hidden_size: int = 64, num_layers: int = 2) -> Path:
    """Save (to `out`) a tiny model answering each observation with a uniformly random valid action name."""
    from tandem.models.factory import ModelSize, build_model
    from tandem.models.tokenizer import train_tokenizer

    env = suite.make("train")
    names = _action_names(env)
    observations = random_play(suite, n_states, seed, suite.max_turns)
    shown = [user_message(env, o, "user") for o in observations]  # what the model reads: the observation and the ask
    corpus = [f"{env.instructions}\n\n{o}\naction: {a}\nobservation:\n" for o in shown for a in names]
    tokenizer = train_tokenizer(corpus, vocab_size=400)
    size = ModelSize(hidden_size=hidden_size, num_layers=num_layers, num_heads=2, num_kv_heads=1,
                     intermediate_size=2 * hidden_size, vocab_size=len(tokenizer), max_positions=2048)
    model = build_model(size, tokenizer, arch="llama", seed=seed)
    fmt = PlainFormat(tokenizer)
    prompts = [fmt.start(env.instructions, o) for o in shown]
    answers = [tokenizer(f" {a}\n", add_special_tokens=False)["input_ids"] for a in names]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        picks = torch.randint(len(prompts), (8,), generator=generator).tolist()
        acts = torch.randint(len(answers), (8,), generator=generator).tolist()
        batch = [(prompts[p], answers[a]) for p, a in zip(picks, acts)]
        width = max(len(p) + len(a) for p, a in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for k, (p, a) in enumerate(batch):
            ids[k, : len(p) + len(a)] = torch.tensor(p + a)
            labels[k, len(p): len(p) + len(a)] = torch.tensor(a)
            attention[k, : len(p) + len(a)] = 1
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
