"""Batching: right padding, -100 labels off the completion, chosen/rejected stacked into one 2B batch."""

from __future__ import annotations

import torch

from tandem.data import pad_preference_batch, pad_sft_batch, pad_unpaired_batch

PAD = 1


def test_sft_batch_labels_only_on_completion():
    examples = [
        {"input_ids": [10, 11, 12, 0], "completion_mask": [0, 0, 1, 1]},
        {"input_ids": [20, 21], "completion_mask": [0, 1]},
    ]
    batch = pad_sft_batch(examples, pad_id=PAD)
    assert batch["input_ids"].tolist() == [[10, 11, 12, 0], [20, 21, PAD, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 12, 0], [-100, 21, -100, -100]]
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long


def test_preference_batch_stacks_chosen_then_rejected():
    examples = [
        {"prompt_ids": [5, 6], "chosen_ids": [7, 0], "rejected_ids": [8, 9, 0]},
        {"prompt_ids": [4], "chosen_ids": [3, 3, 3, 0], "rejected_ids": [2, 0]},
    ]
    batch = pad_preference_batch(examples, pad_id=PAD)
    assert batch["input_ids"].shape == (4, 5)
    assert batch["input_ids"].tolist() == [
        [5, 6, 7, 0, PAD],
        [4, 3, 3, 3, 0],
        [5, 6, 8, 9, 0],
        [4, 2, 0, PAD, PAD],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["completion_mask"].tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]
    # The masks pick out exactly each response's tokens.
    responses = [example["chosen_ids"] for example in examples] + [example["rejected_ids"] for example in examples]
    for row, response in enumerate(responses):
        assert batch["input_ids"][row][batch["completion_mask"][row].bool()].tolist() == response


def test_unpaired_batch_pads_rows_and_carries_bool_labels():
    examples = [{"prompt_ids": [5], "completion_ids": [6, 0], "label": True},
                {"prompt_ids": [5, 5, 5], "completion_ids": [7, 0], "label": False}]
    batch = pad_unpaired_batch(examples, pad_id=PAD)
    assert batch["label"].tolist() == [True, False] and batch["label"].dtype == torch.bool
    assert batch["input_ids"].tolist() == [[5, 6, 0, PAD, PAD], [5, 5, 5, 7, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["completion_mask"].tolist() == [[0, 1, 1, 0, 0], [0, 0, 0, 1, 1]]
    # the masks pick out exactly each completion's tokens
    for row, example in enumerate(examples):
        assert batch["input_ids"][row][batch["completion_mask"][row].bool()].tolist() == example["completion_ids"]
