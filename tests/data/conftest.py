"""Shared fixtures for the data tests: a tiny locally trained tokenizer and a JSONL writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tandem.models.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    """A 512-token byte-level BPE with a ChatML template, trained in milliseconds on short sentences."""
    words = ["the", "cat", "sat", "on", "mat", "what", "is", "answer", "yes", "no", "hello", "world", "assistant", "user"]
    texts = [f"{words[i % 14]} {words[(i * 3) % 14]} {words[(i * 5) % 14]} {i} + {i * 7} = {i * 8}." for i in range(300)]
    return train_tokenizer(texts, vocab_size=512)


@pytest.fixture
def write_jsonl(tmp_path: Path):
    """Write rows (dicts, or raw strings written verbatim) one per line to a JSONL file and return its path."""

    def write(rows: list, name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write
