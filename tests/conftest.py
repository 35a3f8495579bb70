"""Shared fixtures: a tiny model and tokenizer saved as an ordinary Hugging Face directory."""

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def one_torch_thread():
    """One torch thread for a test: tiny tensors gain nothing from a second thread, which only spin-waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sentiment_tokenizer():
    from tandem.models.tokenizer import train_tokenizer
    from tandem.tasks import get_task

    return train_tokenizer(get_task("sentiment").pretrain_corpus(600, seed=0), vocab_size=512)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, sentiment_tokenizer):
    """A ~0.3M-parameter Llama with the sentiment tokenizer, saved with save_pretrained."""
    from tandem.models.factory import ModelSize, build_model

    size = ModelSize(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128, vocab_size=512)
    model = build_model(size, sentiment_tokenizer, arch="llama", seed=0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    sentiment_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory):
    """The smoke quickstart (pretrain -> SFT -> reward model on sentiment), run once for every end-to-end test."""
    from tandem.pipeline import QuickstartConfig, run_quickstart

    out = tmp_path_factory.mktemp("quickstart")
    report = run_quickstart(QuickstartConfig(out=out, preset="smoke", progress=False))
    return out, report
