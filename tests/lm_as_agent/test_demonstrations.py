"""Demonstrations render as RL renders its episodes; the warm start, then RL, on a tiny model; one update for all."""

import copy
import json

import pytest
import torch

from tandem.lm_as_agent.demonstrations import (
    episodes_from_messages, expert_episodes, frozen_lake_path, sft_examples,
)
from tandem.lm_as_agent.env import Corridor, make_env_suite
from tandem.lm_as_agent.rollout import (
    PlainFormat, RolloutOptions, episode_batch, play_text_episodes, user_message,
)
from tandem.lm_as_agent.trainer import AgentRLConfig, run_agent_rl
from tandem.data import pad_prompt_response_batch
from tandem.generation.rollout import RolloutBatch, SamplingConfig
from tandem.models.loading import load_causal_lm, load_tokenizer
from tandem.trainers.grpo import GRPOConfig, GRPOTrainer
from tandem.trainers.rollout_kinds import RolloutKind, Sampled


def test_shortest_path_avoids_holes():
    desc = ["SFF", "HHF", "GFF"]
    path = frozen_lake_path(desc, 0)
    assert path == [2, 2, 1, 1, 0, 0]  # right, right, down, down, left, left: around the holes


def test_expert_episodes_are_rl_episodes_and_a_messages_file_renders_the_same(corridor_model_dir, tmp_path):
    tokenizer = load_tokenizer(corridor_model_dir)
    fmt = PlainFormat(tokenizer)
    suite = make_env_suite("corridor:length=3")
    episodes = expert_episodes(suite, fmt, tokenizer, 3, RolloutOptions(max_turns=5))
    assert all(e.success and len(e.turns) == 3 for e in episodes)
    env = Corridor(3)
    for episode in episodes:
        # the ids RL would have sampled for these replies, after exactly the prompt RL shows
        assert episode.ids[:len(fmt.start(env.instructions, user_message(env, env.reset(), "user")))] == \
            fmt.start(env.instructions, user_message(env, env.reset(), "user"))
        assert all(t.action_ids == fmt.reply_ids("right") for t in episode.turns)
    # the same conversation as a JSONL of messages gives the same ids and loss mask
    with open(tmp_path / "demos.jsonl", "w") as f:
        for episode in episodes:
            messages = [{"role": "system", "content": episode.system},
                        {"role": "user", "content": user_message(env, episode.first_observation, "user")}]
            for turn in episode.turns:
                messages.append({"role": "assistant", "content": turn.action})
                messages.append({"role": "user", "content": user_message(env, turn.observation, "user")})
            f.write(json.dumps({"messages": messages[:-1]}) + "\n")
    loaded = episodes_from_messages(tmp_path / "demos.jsonl", fmt)
    assert sft_examples(loaded, "full") == sft_examples(episodes, "full")
    per_turn = expert_episodes(suite, fmt, tokenizer, 3, RolloutOptions(max_turns=5, history="none"))
    assert sft_examples(loaded, "none") == sft_examples(per_turn, "none")
    batch = episode_batch(episodes, "full", tokenizer.pad_token_id)
    sampled = [i for t in episodes[0].turns for i in t.action_ids]
    assert batch.input_ids[0][batch.completion_mask[0].bool()].tolist() == sampled


def test_a_bad_messages_record_names_its_line_and_field(tmp_path, corridor_model_dir):
    fmt = PlainFormat(load_tokenizer(corridor_model_dir))
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
                    '{"messages": [{"role": "user", "content": 3}]}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2, field 'messages\[0\]'"):
        episodes_from_messages(path, fmt)


def test_the_epsilon_expert_succeeds_less_as_epsilon_grows(corridor_model_dir):
    tokenizer = load_tokenizer(corridor_model_dir)
    suite = make_env_suite("frozenlake:size=4")
    rates = []
    for epsilon in (0.0, 0.5, 1.0):
        episodes = expert_episodes(suite, PlainFormat(tokenizer), tokenizer, 40, RolloutOptions(max_turns=10), epsilon)
        rates.append(sum(e.success for e in episodes) / len(episodes))
    assert rates[0] == 1.0 and rates[0] > rates[1] > rates[2], rates


class _Fixed(RolloutKind):
    def __init__(self, batch, scores, group_size):
        self.batch, self.scores, self.group_size = batch, scores, group_size

    def sample(self, step, times):
        return Sampled(copy.deepcopy(self.batch), self.scores.clone(), torch.ones_like(self.scores, dtype=torch.bool))


def test_single_turn_rows_from_the_agent_path_and_the_prompt_path_take_the_same_update(corridor_model_dir, tmp_path):
    """One update for both: single-turn episodes as agent rows, and the same sampled ids as GRPO's prompt rows."""
    tokenizer = load_tokenizer(corridor_model_dir)
    model = load_causal_lm(corridor_model_dir)
    fmt = PlainFormat(tokenizer)
    envs = [Corridor(1) for _ in range(4)]
    torch.manual_seed(0)
    episodes = play_text_episodes(model, tokenizer, fmt, envs, [0] * 4, [0, 0, 1, 1], SamplingConfig(max_new_tokens=4),
                            RolloutOptions(max_turns=1))
    agent = episode_batch(episodes, "full", tokenizer.pad_token_id)
    prompts = [fmt.start(e.system, user_message(envs[0], e.first_observation, "user")) for e in episodes]
    completions = [e.turns[0].action_ids for e in episodes]
    padded = pad_prompt_response_batch(prompts, completions, tokenizer.pad_token_id)
    sampled = torch.zeros(padded["input_ids"].shape)
    for k, (p, e) in enumerate(zip(prompts, episodes)):
        sampled[k, len(p):len(p) + len(completions[k])] = torch.tensor(e.turns[0].log_probs)
    single = RolloutBatch([""] * 4, [e.turns[0].action for e in episodes], padded["input_ids"], padded["attention_mask"],
                          padded["completion_mask"], sampled, agent.ended, agent.group_ids)
    assert torch.equal(single.input_ids, agent.input_ids) and torch.equal(single.completion_mask, agent.completion_mask)
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0])
    results = []
    for batch in (agent, single):
        config = GRPOConfig(out=tmp_path / "run", batch_size=2, samples_per_prompt=2, progress=False, threads=1,
                            mixed_precision="no", max_steps=1, n_eval=0, lr=1e-3)
        trainer = GRPOTrainer(config, load_causal_lm(corridor_model_dir), tokenizer, list(range(8)), None,
                              max_new_tokens=4, rollouts=lambda t, b=batch: _Fixed(b, scores, 2))
        data = trainer.collect(0)
        results.append(trainer.update(data, 0))
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], abs=1e-7)
    assert results[0]["grad_norm"] == pytest.approx(results[1]["grad_norm"], rel=1e-6)
    assert results[0]["grad_norm"] > 0


@pytest.mark.e2e
def test_warm_start_then_rl_beats_the_warm_start_alone(corridor_model_dir, tmp_path):
    """A noisy expert (epsilon 0.5) cloned for 40 steps leaves room; 12 RL steps of GRPO raise held-out success."""
    config = AgentRLConfig(model=corridor_model_dir, env="corridor:length=3", max_turns=3, out=tmp_path / "run",
                           demonstrations="expert", demo_episodes=64, demo_epsilon=0.5, warm_start_steps=40,
                           warm_start_lr=3e-3, batch_size=4, episodes_per_start=4, n_eval=64, eval_temperature=1.0,
                           max_new_tokens=4, lr=3e-3, max_steps=12, progress=False, threads=1)
    run_agent_rl(config)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    before, after = report["before"]["eval/success_rate"], report["after"]["eval/success_rate"]
    assert (tmp_path / "run" / "warm-start" / "model" / "config.json").exists()
    assert after > before + 0.15, (before, after)


def _play_expert(spec: str, seeds) -> list[tuple[list[str], bool]]:
    from tandem.lm_as_agent.demonstrations import make_expert
    from tandem.lm_as_agent.env import make_env_suite

    suite, played = make_env_suite(spec), []
    for seed in seeds:
        env = suite.make("train")
        env.reset(seed=seed)
        act, actions = make_expert(env), []
        for _ in range(suite.max_turns):
            actions.append(act())
            result = env.step(actions[-1])
            if result.terminated or result.truncated:
                break
        played.append((actions, bool(result.info.get("success", False))))
    return played


def test_the_calculator_expert_calls_the_tool_then_answers_right():
    played = _play_expert("tools:arithmetic:digits=3:operations=*:tools=calculator", range(12))
    assert all(success for _, success in played)
    for actions, _ in played:
        assert len(actions) == 2 and actions[0].startswith('<tool_call>{"name": "calculator"') and "####" in actions[1]


def test_the_guess_the_number_expert_wins_by_binary_search():
    played = _play_expert("textarena:GuessTheNumber-v0", range(8))
    assert all(success for _, success in played)
    assert all(len(actions) <= 5 for actions, _ in played)  # log2(20) rounded up
