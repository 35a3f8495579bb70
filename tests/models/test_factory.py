import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tandem.models.factory import MODEL_SIZES, build_model, count_parameters
from tandem.models.loading import load_causal_lm, load_tokenizer
from tandem.models.tokenizer import EOS_TOKEN, PAD_TOKEN


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_saved_tiny_model_loads_and_generates_with_plain_transformers(tmp_path, sentiment_tokenizer, arch):
    model = build_model("tiny", sentiment_tokenizer, arch=arch)
    model.save_pretrained(tmp_path)
    sentiment_tokenizer.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.config.model_type == arch
    inputs = tokenizer(["Review: The film"], return_tensors="pt")
    out = loaded.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs).logits, model.eval()(**inputs).logits, atol=1e-5)


def test_tokenizer_special_tokens_and_chat_template(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token == PAD_TOKEN
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer("12345", add_special_tokens=False).input_ids
    assert len(ids) == 5  # digits are split one by one
    assert tokenizer.decode(tokenizer("any text, even ünïcode!").input_ids) == "any text, even ünïcode!"


def test_model_sizes_span_one_to_thirty_million(sentiment_tokenizer):
    from tandem.models.tokenizer import train_tokenizer

    assert count_parameters(build_model("tiny", sentiment_tokenizer)) < 1.5e6
    big_vocab = train_tokenizer([f"word{i} text{i * 7}" for i in range(5000)], vocab_size=4096)
    n = count_parameters(build_model("medium", big_vocab))
    assert 20e6 < n < 40e6
    with pytest.raises(ValueError, match="known sizes"):
        build_model("huge", sentiment_tokenizer)
    assert set(MODEL_SIZES) == {"tiny", "small", "medium"}


def test_gpt2_directory_without_pad_token_loads(tmp_path, sentiment_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(sentiment_tokenizer), n_embd=32, n_layer=1, n_head=2,
                                       eos_token_id=sentiment_tokenizer.eos_token_id, bos_token_id=None))
    model.save_pretrained(tmp_path)
    bare = PreTrainedTokenizerFast(tokenizer_object=sentiment_tokenizer.backend_tokenizer, eos_token=EOS_TOKEN)
    bare.save_pretrained(tmp_path)
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.pad_token == EOS_TOKEN
    assert load_causal_lm(tmp_path).config.pad_token_id == tokenizer.eos_token_id


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model directory"):
        load_causal_lm(tmp_path)
