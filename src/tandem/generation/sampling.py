"""Batched generation with left padding and a KV cache (Hugging Face `generate`)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass
class Samples:
    """Sampled completions: token ids (ending at the first stop token, which is kept) and decoded text."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]


# Tokens that end an assistant turn in the common chat templates (ChatML, Llama 3, Gemma, Phi-3): a chat reply
# stops at them.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def end_of_turn_ids(tokenizer) -> set[int]:
    """Ids of the end-of-turn tokens the tokenizer has."""
    vocabulary = tokenizer.get_vocab()
    return {vocabulary[token] for token in END_OF_TURN_TOKENS if token in vocabulary}


def _stop_ids(model, tokenizer, end_of_turn: bool = True) -> set[int]:
    """EOS of the model's generation config and of the tokenizer, and (`end_of_turn`, for a tokenizer with a
    chat template) its end-of-turn token."""
    return stop_ids(model.generation_config, tokenizer, end_of_turn)


def stop_ids(generation_config, tokenizer, end_of_turn: bool = True) -> set[int]:
    """`_stop_ids` from a generation config (an engine started from a model directory has no model object)."""
    eos = getattr(generation_config, "eos_token_id", None)
    stops = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        stops.add(tokenizer.eos_token_id)
    if end_of_turn and getattr(tokenizer, "chat_template", None):
        stops |= end_of_turn_ids(tokenizer)
    return stops


@contextmanager
def seeded(seed: int | None, device: torch.device):
    """torch's generators seeded with `seed` inside the block and restored after it (the host's and every device's
    of the model's kind), so a seeded evaluation repeats its draws and leaves the training's stream where it was."""
    if seed is None:
        yield
        return
    accelerator = getattr(torch, device.type) if device.type != "cpu" else None
    devices = list(range(accelerator.device_count())) if accelerator is not None else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    seed: int | None = None,
    engine=None,
) -> Samples:
    """Continue each prompt; temperature 0 means greedy.

    `engine` (a `tandem.generation.engines` engine, made from this model): it generates instead of Hugging Face
    `generate`, with the same stop tokens and the same `Samples`.
    """
    if engine is not None:
        return engine.sample(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             batch_size=batch_size, seed=seed)
    device = next(model.parameters()).device
    with seeded(seed, device):
        return _generate(model, tokenizer, prompts, max_new_tokens, temperature, top_p, batch_size, device)


def _generate(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float, top_p: float,
              batch_size: int, device: torch.device) -> Samples:
    was_training = model.training
    model.eval()
    stops = _stop_ids(model, tokenizer)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    result = Samples([], [], [])
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
            output = model.generate(
                **encoded, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=sorted(stops), **sampling
            )
            width = encoded["input_ids"].shape[1]
            for row, mask, generated in zip(encoded["input_ids"], encoded["attention_mask"], output[:, width:].tolist()):
                cut = next((i + 1 for i, token in enumerate(generated) if token in stops), len(generated))
                result.prompt_ids.append(row[mask.bool()].tolist())
                result.completion_ids.append(generated[:cut])
            result.texts.extend(tokenizer.batch_decode(output[:, width:], skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return result


def generate_completions(model, tokenizer, prompts: list[str], **options) -> list[str]:
    """The decoded new text for each prompt (special tokens dropped); options (`engine` too) as for `sample`."""
    return sample(model, tokenizer, prompts, **options).texts
