"""The KV cache of a multi-turn rollout, kept from one turn to the next.

When the prompt is the whole conversation (an agent with ``--history full``), turn t's prompt is turn t-1's
prompt, the reply sampled there and the environment's answer. Starting `generate` from the token ids alone
computes the conversation again at every turn: over an episode of T turns, O(T^2) tokens. `TurnCache` keeps the
batch's keys and values after each turn's `generate` and computes only what each conversation gained since: the
environment's answer, and the reply's last token (whose keys `generate` never computes). This is what vLLM's
prefix caching gives its engine; here it serves Hugging Face `generate`.

Layout: row k of the cache holds conversation k's tokens in order, with masked columns between them (a reply
that stopped before the longest one leaves its remaining columns masked; a shorter answer is left-padded to
the longest). Position ids are the attention mask's running count, which is how `generate` derives them, so
the masked columns shift nothing: the logits equal a fresh prefill's to floating-point rounding.
"""

from __future__ import annotations

import torch

from tandem.generation.prefix import can_keep, expand_cache, padded_rows, segment_forward

__all__ = ["TurnCache", "can_keep"]


class TurnCache:
    """Keys and values of the conversations of one rollout, by owner (an episode's index in the rollout).

    Valid while the weights stay as they are: make one per rollout. `encode` lays a turn's prompts out over the
    kept cache (None when a prompt does not continue its conversation: the first turn, or another history);
    `keep` stores what `generate` left after the turn.
    """

    def __init__(self, model, pad_token_id: int):
        self.model, self.pad = model, pad_token_id
        self.cache = None
        self.layout: torch.Tensor | None = None   # (rows, columns held) token ids, pads included
        self.mask: torch.Tensor | None = None     # (rows, columns held) 1 where a column is a real token
        self.held: dict[int, list[int]] = {}      # owner -> the real tokens its row holds, in order
        self.row: dict[int, int] = {}             # owner -> its row in the cache
        self.computed_tokens = 0                  # prompt tokens computed by `encode` (what the cache saved shows here)

    def encode(self, prompt_ids: list[list[int]], owners: list[int], device):
        """({input_ids, attention_mask}, cache) for `generate`: the kept columns, then each prompt's new tokens
        left-padded, the cache covering all but the last column. None when the cache cannot serve these prompts."""
        if self.cache is None or any(o not in self.row for o in owners):
            return None
        news = []
        for prompt, owner in zip(prompt_ids, owners):
            held = self.held[owner]
            if len(prompt) <= len(held) or prompt[:len(held)] != held:
                return None
            news.append(prompt[len(held):])
        index = torch.tensor([self.row[o] for o in owners], device=device)
        cache, past_mask = expand_cache(self.cache, index), self.mask[index]
        self.cache = None  # reordered in place: it serves this turn only, `keep` stores the next
        ids, segment_mask = padded_rows(news, self.pad, True, device)
        if ids.shape[1] > 1:  # all but each prompt's last token; `generate` computes the last column
            _, cache, past_mask = segment_forward(self.model, ids[:, :-1], segment_mask[:, :-1], past_mask, cache,
                                           {"logits_to_keep": 1})
        self.computed_tokens += sum(len(n) for n in news)
        input_ids = torch.cat([self.layout[index], ids], dim=1)
        attention_mask = torch.cat([past_mask, segment_mask[:, -1:]], dim=1)
        return {"input_ids": input_ids, "attention_mask": attention_mask}, cache

    def keep(self, owners: list[int], encoded: dict[str, torch.Tensor], sequences: torch.Tensor, cache,
             kept_tokens: list[int]) -> None:
        """Store the cache `generate` left: it covers `sequences` but its last column. `kept_tokens`: how many of
        each row's generated tokens the conversation keeps (the rest, after a stop, are masked)."""
        columns = sequences.shape[1] - 1
        if cache is None or cache.get_seq_length() != columns:
            self.cache = None
            return
        width = encoded["input_ids"].shape[1]
        generated = torch.arange(sequences.shape[1] - width, device=sequences.device).unsqueeze(0)
        reply_mask = (generated < torch.tensor(kept_tokens, device=sequences.device).unsqueeze(1)).to(encoded["attention_mask"].dtype)
        mask = torch.cat([encoded["attention_mask"], reply_mask], dim=1)[:, :columns]
        self.cache, self.layout, self.mask = cache, sequences[:, :columns], mask
        self.row = {owner: k for k, owner in enumerate(owners)}
        self.held = {owner: self.layout[k][mask[k].bool()].tolist() for k, owner in enumerate(owners)}
