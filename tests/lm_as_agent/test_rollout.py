"""Multi-turn rollouts: the ids trained on are the ids sampled, loss only on them, truncation and errors."""

import pytest
import torch

from tandem.lm_as_agent.env import Corridor, EnvError, StepResult, TextEnv
from tandem.lm_as_agent.rollout import (
    PlainFormat, RolloutOptions, TemplateFormat, chat_format, episode_batch, play_text_episodes, user_message,
)
from tandem.generation.rollout import SamplingConfig
from tandem.models.loading import load_causal_lm, load_tokenizer


@pytest.fixture(scope="module")
def corridor(corridor_model_dir):
    return load_tokenizer(corridor_model_dir), load_causal_lm(corridor_model_dir)


def _play(model, tokenizer, fmt, n=4, turns=3, history="full", length=10, seed=0, **sampling):
    torch.manual_seed(seed)
    envs = [Corridor(length) for _ in range(n)]
    return play_text_episodes(model, tokenizer, fmt, envs, list(range(n)), list(range(n)),
                        SamplingConfig(max_new_tokens=sampling.pop("max_new_tokens", 6), **sampling),
                        RolloutOptions(max_turns=turns, history=history))


@pytest.mark.parametrize("chat", [False, True])
def test_three_turn_episode_trains_exactly_the_sampled_ids(corridor, chat):
    tokenizer, model = corridor
    fmt = chat_format(tokenizer, chat)
    episodes = _play(model, tokenizer, fmt, turns=3)
    rows = episode_batch(episodes, "full", tokenizer.pad_token_id)
    for k, episode in enumerate(episodes):
        assert len(episode.turns) == 3 and episode.truncated and episode.truncation == "max_turns"
        sampled = [i for t in episode.turns for i in t.action_ids]
        mask = rows.completion_mask[k].bool()
        # token by token: the loss mask covers exactly the sampled ids, in order, with their sampling log-probs
        assert rows.input_ids[k][mask].tolist() == sampled
        assert torch.allclose(rows.sampled_log_probs[k][mask], torch.tensor([p for t in episode.turns for p in t.log_probs]))
        # each turn's reward sits on its last sampled token, and they add up to the episode's return
        ends = (mask & ~torch.nn.functional.pad(mask[1:], (0, 1), value=False)).nonzero().flatten()
        assert rows.step_rewards[k][ends].tolist() == pytest.approx([t.reward for t in episode.turns])
        assert float(rows.step_rewards[k].sum()) == pytest.approx(episode.total_reward)
        # everything else is the format's rendering of the instructions and the observations (no loss there)
        first = len(fmt.start(episode.system, user_message(Corridor(10), episode.first_observation, "user")))
        assert (rows.completion_mask[k][:first] == 0).all()
        assert mask[first:first + len(episode.turns[0].action_ids)].all()


def test_chat_episode_is_the_template_rendering_of_the_conversation(corridor):
    tokenizer, model = corridor
    fmt = TemplateFormat(tokenizer)
    episode = _play(model, tokenizer, fmt, n=1, turns=3, max_new_tokens=4)[0]
    env = Corridor(10)
    messages = [{"role": "system", "content": episode.system},
                {"role": "user", "content": user_message(env, episode.first_observation, "user")}]
    for turn in episode.turns:
        messages.append({"role": "assistant", "content": tokenizer.decode(turn.action_ids, skip_special_tokens=True)})
        messages.append({"role": "user", "content": user_message(env, turn.observation, "user")})
    # replies cut at the length limit were closed with the end-of-turn token (which carries no loss); the last
    # reply is as sampled
    rendered = tokenizer.apply_chat_template(messages[:-2], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(episode.ids) == rendered + tokenizer.decode(episode.turns[-1].action_ids)
    closers = [i for i, (token, m) in enumerate(zip(episode.ids, episode.assistant_mask)) if token == fmt.end_of_turn]
    assert closers, "every turn is closed by the end-of-turn token"


def test_history_none_rows_are_one_turn_each(corridor):
    tokenizer, model = corridor
    fmt = PlainFormat(tokenizer)
    episodes = _play(model, tokenizer, fmt, n=2, turns=3, history="none")
    rows = episode_batch(episodes, "none", tokenizer.pad_token_id)
    assert rows.input_ids.shape[0] == sum(len(e.turns) for e in episodes)
    assert rows.sample_ids.tolist() == [e for e, episode in enumerate(episodes) for _ in episode.turns]
    row = 0
    for episode in episodes:
        for turn in episode.turns:
            mask = rows.completion_mask[row].bool()
            assert rows.input_ids[row][mask].tolist() == turn.action_ids
            assert rows.input_ids[row][: len(turn.prompt_ids)].tolist() == turn.prompt_ids
            row += 1


def test_context_budget_truncates(corridor):
    tokenizer, model = corridor
    fmt = PlainFormat(tokenizer)
    start = len(fmt.start(Corridor(10).instructions, user_message(Corridor(10), Corridor(10).reset(), "user")))
    envs = [Corridor(10)]
    episode = play_text_episodes(model, tokenizer, fmt, envs, [0], [0], SamplingConfig(max_new_tokens=6),
                           RolloutOptions(max_turns=50, max_context=start + 40))[0]
    assert episode.truncated and episode.truncation == "context"
    assert len(episode.turns) >= 2
    assert all(turn.prompt_length + 6 <= start + 40 for turn in episode.turns)  # every reply had room


class Exploding(TextEnv):
    instructions = "say anything"

    def reset(self, seed=None):
        return "start"

    def step(self, action):
        if action is not None:
            raise KeyError("broken physics")
        return StepResult("", 0.0, True)


def test_env_exception_names_episode_and_turn(corridor):
    tokenizer, model = corridor
    with pytest.raises(EnvError, match=r"step \(episode seed 7, turn 1\).*KeyError.*broken physics"):
        play_text_episodes(model, tokenizer, PlainFormat(tokenizer), [Exploding()], [7], [0], SamplingConfig(max_new_tokens=3),
                     RolloutOptions(max_turns=3))


def test_shaping_adds_the_potential_difference(corridor):
    tokenizer, model = corridor
    potential = lambda text: float(text.index("@"))  # noqa: E731 - progress = the agent's cell
    torch.manual_seed(0)
    envs = [Corridor(3) for _ in range(4)]
    episodes = play_text_episodes(model, tokenizer, PlainFormat(tokenizer), envs, [0] * 4, [0] * 4,
                            SamplingConfig(max_new_tokens=6), RolloutOptions(max_turns=4), shaping=potential, gamma=0.9)
    for episode in episodes:
        phi = 0.0
        for turn in episode.turns:
            terminal = episode.success and turn is episode.turns[-1]
            nxt = 0.0 if terminal else float(turn.observation.split("\n")[-1].index("@"))
            assert turn.reward == pytest.approx(turn.env_reward + 0.9 * nxt - phi)
            phi = nxt


@pytest.mark.parametrize("chat", [False, True])
def test_turn_cache_samples_what_a_fresh_prefill_samples(corridor, chat, monkeypatch):
    """History full: the KV cache kept across turns computes only each turn's new tokens, and the episodes are
    the ones a fresh prefill of the whole conversation gives (same keyed draws, same log-probs to rounding)."""
    from tandem.generation.turn_cache import TurnCache
    from tandem.lm_as_agent.rollout import episode_sampling, model_sampler

    tokenizer, model = corridor
    fmt = chat_format(tokenizer, chat)
    config = episode_sampling(SamplingConfig(max_new_tokens=6, temperature=1.0), fmt)
    served = []
    encode = TurnCache.encode

    def counting(self, prompt_ids, owners, device):
        out = encode(self, prompt_ids, owners, device)
        served.append(out is not None)
        return out
    monkeypatch.setattr(TurnCache, "encode", counting)

    def play(keep_cache):
        envs = [Corridor(3) for _ in range(6)]  # short: episodes end at different turns, rows leave the cache
        sampler = model_sampler(model, tokenizer, config, key_base=12345, keep_cache=keep_cache)
        return play_text_episodes(model, tokenizer, fmt, envs, list(range(6)), [0, 0, 0, 1, 1, 1], config,
                                  RolloutOptions(max_turns=5, history="full"), sampler=sampler)

    fresh = play(False)
    assert not served
    cached = play(True)
    assert served and all(served[1:]) and not served[0]  # every turn after the first continued the cache
    if not chat:  # the model answers plain prompts validly: episodes end at different turns
        assert len({len(e.turns) for e in cached}) > 1, "episodes of different lengths exercise rows leaving the cache"
    for a, b in zip(fresh, cached):
        assert a.ids == b.ids and a.assistant_mask == b.assistant_mask
        assert [t.action for t in a.turns] == [t.action for t in b.turns]
        assert b.sampled_log_probs == pytest.approx(a.sampled_log_probs, abs=1e-4)


def test_turn_cache_declines_prompts_that_do_not_continue_their_conversation(corridor):
    from tandem.generation.rollout import sample_ids
    from tandem.generation.turn_cache import TurnCache

    tokenizer, model = corridor
    turns = TurnCache(model, tokenizer.pad_token_id)
    prompt = tokenizer("left right", add_special_tokens=False)["input_ids"]
    sample_ids(model, tokenizer, [prompt, prompt + prompt], SamplingConfig(max_new_tokens=3), turns=turns, owners=[0, 1])
    assert turns.encode([prompt + [5]], [0], "cpu") is None or turns.held[0] == prompt[:len(turns.held[0])]
    assert turns.encode([list(reversed(prompt))], [0], "cpu") is None   # not a continuation
    assert turns.encode([prompt], [7], "cpu") is None                   # a conversation it never saw
