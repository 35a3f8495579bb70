"""RewardModelScorer: batched, right-padded scores equal a manual forward pass of prompt + completion + EOS."""

import pytest
import torch

from tandem.data import tokenize_preference
from tandem.models.loading import load_reward_model, load_tokenizer
from tandem.rewards import RewardModelScorer, build_reward, score_safely

PROMPTS = ["Review: I watched the sequel and", "Review: The film", "Review: My sister said it was"]
COMPLETIONS = [" it was great fun.", " was boring and far too long for anyone to enjoy, really.", " lovely"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A model this small runs fastest on one thread, and does not stall when other processes load the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir):
    torch.manual_seed(0)
    return load_reward_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def manual_scores(model, tokenizer):
    scores = []
    for prompt, completion in zip(PROMPTS, COMPLETIONS):
        ids = tokenize_preference({"prompt": prompt, "chosen": completion, "rejected": ""}, tokenizer)
        sequence = ids["prompt_ids"] + ids["chosen_ids"]
        assert sequence[-1] == tokenizer.eos_token_id
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([sequence]), attention_mask=torch.ones(1, len(sequence))).logits
        scores.append(logits.squeeze(-1).item())
    return scores


def test_batched_scores_equal_an_unpadded_manual_forward(reward_model):
    model, tokenizer = reward_model
    scorer = RewardModelScorer(model, tokenizer, batch_size=2)
    scores = scorer(PROMPTS, COMPLETIONS)
    assert len(set(map(len, scorer.tokenize(PROMPTS, COMPLETIONS)))) == 3  # the batches really are padded
    assert scores == pytest.approx(manual_scores(model, tokenizer), abs=1e-5)
    assert scorer.name == "reward_model" and not model.training


def test_loading_from_a_directory_and_through_build_reward(reward_model, tmp_path):
    model, tokenizer = reward_model
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    expected = RewardModelScorer(model, tokenizer)(PROMPTS, COMPLETIONS)
    from_dir = RewardModelScorer(tmp_path, batch_size=1)
    assert from_dir.name == f"model:{tmp_path}"
    assert from_dir(PROMPTS, COMPLETIONS) == pytest.approx(expected, abs=1e-5)
    built = build_reward(f"model:{tmp_path}:batch_size=2")
    assert isinstance(built, RewardModelScorer) and built.batch_size == 2
    scored = score_safely(built, PROMPTS, COMPLETIONS)
    assert scored.rewards == pytest.approx(expected, abs=1e-5) and scored.report.clean


def test_a_model_object_needs_its_tokenizer(reward_model):
    with pytest.raises(ValueError, match="tokenizer"):
        RewardModelScorer(reward_model[0])
    with pytest.raises(ValueError, match="batch_size"):
        RewardModelScorer(*reward_model, batch_size=0)


def test_a_reward_model_and_a_local_judge_run_where_and_in_the_precision_they_are_told(tiny_model_dir):
    """The policy's device and training precision reach the models beside it (bf16 here; the GPU's device there)."""
    scorer = build_reward(f"model:{tiny_model_dir}", device="cpu", dtype=torch.bfloat16)
    assert next(scorer.model.parameters()).dtype == torch.bfloat16
    full = load_reward_model(tiny_model_dir)  # the same weights, rounded (the score head is fresh from an LM directory)
    embedding = scorer.model.get_input_embeddings().weight
    assert embedding.float().allclose(full.get_input_embeddings().weight, atol=1e-2)
    assert all(isinstance(s, float) for s in scorer(PROMPTS, COMPLETIONS))
    judged = build_reward(f"judge:local:{tiny_model_dir}", device="cpu", dtype=torch.bfloat16)
    assert next(judged.judge.model.parameters()).dtype == torch.bfloat16
    assert all(0.0 <= v <= 1.0 for v in judged(PROMPTS, COMPLETIONS))
