"""Multi-turn agent rollouts on the vLLM engine against `generate`: the same ids and masks, and log-probs the
training forward reproduces (runs in `.ci/run`'s vLLM stage; elsewhere it skips)."""

import pytest
import torch

from checks import require_vllm

pytestmark = pytest.mark.vllm
require_vllm()  # skips where vLLM is missing; fails in .ci/run's vLLM stage

from tandem.algorithms.losses import IGNORE_INDEX, token_log_probs  # noqa: E402
from tandem.generation.engines import make_engine  # noqa: E402
from tandem.generation.rollout import SamplingConfig  # noqa: E402
from tandem.lm_as_agent.env import Corridor  # noqa: E402
from tandem.lm_as_agent.rollout import (  # noqa: E402
    RolloutOptions, chat_format, episode_batch, episode_sampling, model_sampler, play_text_episodes,
)
from tandem.models.loading import load_causal_lm, load_tokenizer  # noqa: E402

TOLERANCE = 1e-4  # fp32 engine against the fp32 training forward (test_vllm_engine.py)


@pytest.fixture(scope="module")
def agent(corridor_model_dir, tmp_path_factory):
    model, tokenizer = load_causal_lm(corridor_model_dir), load_tokenizer(corridor_model_dir)
    engine = make_engine("vllm", model, tokenizer, folder=tmp_path_factory.mktemp("engine"), dtype="float32",
                         enforce_eager=True, max_model_len=256)
    yield model, tokenizer, engine
    engine.close()


def _play(agent, history: str, temperature: float, on_engine: bool):
    model, tokenizer, engine = agent
    fmt = chat_format(tokenizer, False)
    sampling = SamplingConfig(max_new_tokens=6, temperature=temperature)
    sampler = model_sampler(model, tokenizer, episode_sampling(sampling, fmt), engine=engine if on_engine else None,
                            key_base=7)
    envs = [Corridor(3) for _ in range(6)]
    episodes = play_text_episodes(model, tokenizer, fmt, envs, list(range(6)), [0, 0, 0, 1, 1, 1], sampling,
                                  RolloutOptions(max_turns=5, history=history), sampler=sampler)
    return episodes, episode_batch(episodes, history, tokenizer.pad_token_id)


@pytest.mark.parametrize("history", ["full", "none"])
def test_greedy_multi_turn_episodes_are_the_same_ids_and_masks_as_generate(agent, history):
    hf_episodes, hf_rows = _play(agent, history, 0.0, on_engine=False)
    vllm_episodes, vllm_rows = _play(agent, history, 0.0, on_engine=True)
    assert sum(len(e.turns) for e in hf_episodes) > 6  # more than one turn an episode
    assert [[t.action_ids for t in e.turns] for e in vllm_episodes] == [[t.action_ids for t in e.turns] for e in hf_episodes]
    assert torch.equal(vllm_rows.input_ids, hf_rows.input_ids)
    assert torch.equal(vllm_rows.completion_mask, hf_rows.completion_mask)
    assert torch.equal(vllm_rows.step_rewards, hf_rows.step_rewards)


@pytest.mark.parametrize("history", ["full", "none"])
def test_sampled_multi_turn_log_probs_are_the_training_forwards(agent, history):
    model = agent[0]
    _, rows = _play(agent, history, 1.0, on_engine=True)
    with torch.no_grad():
        logits = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask).logits
    labels = rows.input_ids.masked_fill(rows.completion_mask == 0, IGNORE_INDEX)
    recomputed, mask = token_log_probs(logits, labels)
    assert mask.sum() > 12
    gap = ((recomputed - rows.sampled_log_probs[:, 1:]).abs() * mask).max()
    assert gap < TOLERANCE, f"engine vs training forward over multi-turn rows: max |delta log p| = {gap:.2e}"
