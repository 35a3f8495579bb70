"""The decoding engine behind `tandem serve`: stop strings, held-back text, seeds, log-probs."""

import pytest
import torch

from tandem.models.loading import load_causal_lm, load_tokenizer
from tandem.serve import Engine, first_stop, held_back


def test_held_back_covers_partial_stop_strings_and_broken_characters():
    assert held_back("hello wor", ["world"]) == 3
    assert held_back("hello", ["xyz"]) == 0
    assert held_back("abc\ufffd", []) == 1
    assert held_back("the end.", [".\n", "end"]) == 1  # "." might start ".\n"; "end" is whole, so found, not held
    assert first_stop("one. two. three", [". t", "two"]) == 3 and first_stop("abc", ["x"]) is None


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir))


def test_streamed_text_never_shows_a_stop_string_and_ends_before_it(engine):
    ids = engine.prompt_ids("Review: the film")
    [full] = engine.complete(ids, max_tokens=12, temperature=0.0)
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    assert len(stop) == 3 and full.finish_reason == "length"
    shown = ""
    for events in engine.stream(ids, max_tokens=12, temperature=0.0, stop=[stop]):
        for event in events:
            shown += event.text
            assert stop not in shown
    assert shown == full.text[: full.text.index(stop)]


def test_the_same_seed_samples_the_same_choices(engine):
    ids = engine.prompt_ids("Review: this comedy")
    first = engine.complete(ids, n=3, max_tokens=8, temperature=1.0, seed=7)
    again = engine.complete(ids, n=3, max_tokens=8, temperature=1.0, seed=7)
    other = engine.complete(ids, n=3, max_tokens=8, temperature=1.0, seed=8)
    assert [c.text for c in first] == [c.text for c in again] != [c.text for c in other]
    assert len({c.text for c in first}) > 1  # rows sample independently


def test_top_k_one_samples_the_greedy_choice(engine):
    ids = engine.prompt_ids("Review: the plot")
    greedy = engine.complete(ids, max_tokens=8, temperature=0.0)
    assert [c.text for c in engine.complete(ids, n=3, max_tokens=8, temperature=1.5, top_k=1)] == [greedy[0].text] * 3


def test_logprobs_are_the_model_distribution_at_each_generated_token(engine):
    ids = engine.prompt_ids("Review: the sequel")
    [choice] = engine.complete(ids, max_tokens=6, temperature=1.0, seed=3, logprobs=3)
    generated = [entry.token_id for entry in choice.logprobs]
    assert engine.tokenizer.decode(generated, skip_special_tokens=True) == choice.text
    with torch.no_grad():
        log_probs = engine.model(input_ids=torch.tensor([ids + generated])).logits[0].log_softmax(-1)
    expected = [float(log_probs[len(ids) - 1 + i, token]) for i, token in enumerate(generated)]
    assert [e.logprob for e in choice.logprobs] == pytest.approx(expected, abs=1e-4)
    for entry, row in zip(choice.logprobs, log_probs[len(ids) - 1 :]):
        values, best = row.topk(3)
        assert [lp for _, lp in entry.top] == pytest.approx(values.tolist(), abs=1e-4)
        assert [text for text, _ in entry.top] == [engine.tokenizer.decode([i]) for i in best.tolist()]


def test_vllm_is_given_the_model_directory_or_an_adapter_merged(tiny_model_dir, tmp_path, one_torch_thread):
    """What `--engine vllm` loads (no vLLM needed): a Hugging Face directory as it is; an adapter merged into a copy
    that loads in plain transformers with the adapted model's logits (a GGUF file: its converted directory)."""
    from tandem.models.loading import add_lora, save_model
    from tandem.serve.vllm_engine import vllm_model_folder

    assert vllm_model_folder(tiny_model_dir, torch.float32) == tiny_model_dir
    adapted = add_lora(load_causal_lm(tiny_model_dir), rank=4, alpha=8)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    save_model(adapted, load_tokenizer(tiny_model_dir), tmp_path / "adapter")
    folder = vllm_model_folder(tmp_path / "adapter", torch.float32)
    assert (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file()
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        expected = adapted.eval()(input_ids=ids).logits
        merged = load_causal_lm(folder).eval()(input_ids=ids).logits
    assert torch.allclose(merged, expected, atol=1e-5)
