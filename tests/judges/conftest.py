"""Judge fixtures: a tiny model taught to answer the built-in compare template with "Verdict: A", and a fake judge server."""

import pytest
import torch


@pytest.fixture(scope="session")
def answering_judge_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model fine-tuned for a few steps to reply "Verdict: A" to compare questions (so its text parses)."""
    from tandem.data import pad_sft_batch, tokenize_sft
    from tandem.judges import load_template
    from tandem.models.loading import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    template = load_template("compare")
    questions = [{"prompt": f"Review: film {i}", "response_a": f" was great {i}.", "response_b": f" was dull {i}."} for i in range(4)]
    examples = [
        tokenize_sft({"prompt": tokenizer.apply_chat_template(template.messages(q), tokenize=False, add_generation_prompt=True),
                      "completion": "Verdict: A<|im_end|><|endoftext|>"}, tokenizer)
        for q in questions
    ]
    batch = pad_sft_batch(examples, tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only adds contention on a shared machine
    try:
        for _ in range(60):
            loss = model(**batch, use_cache=False).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    folder = tmp_path_factory.mktemp("answering-judge")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
