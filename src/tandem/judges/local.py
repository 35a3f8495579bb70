"""A judge run from a local Hugging Face causal LM directory, read from answer-token probabilities.

The question is rendered with the tokenizer's chat template (plain "role: text" lines when it has
none), the assistant turn is opened with the verdict prefix ("Verdict:"), and one forward pass gives
the next-token distribution; the verdict is the probability-weighted label value renormalised over
the answer labels (see `reading.expected_label_value`), never parsed from sampled text. Each label
is read where its token comes (see `LocalJudge.reading_plan`). With chain-of-thought, reasoning is first
generated greedily by the judge's generation engine (`engine`: `hf`, or `vllm`, started on the first
reasoning request, from the judge's directory where it has one), then the prefix is appended and read
the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tandem.judges.base import Question, TemplateJudge, Verdict, unusable
from tandem.judges.reading import expected_label_value


class LocalJudge(TemplateJudge):
    """A template judge backed by a local causal LM.

    Args:
        model: a model directory (loaded with `tandem.models.loading`), or a loaded model.
        tokenizer: needed with a model object; by default the directory's own.
        batch_size: questions per forward pass.
        device: where the model runs (None: where it is; a directory loads on CPU).
        dtype: the precision it runs in (the policy's training precision where it judges for RL); None: a loaded
            model's own, fp32 from a directory.
        cot_max_tokens: reasoning tokens generated before the verdict when `cot=True`.
        engine: the generation engine that writes the reasoning (`tandem.generation.engines`): hf, vllm, or an
            engine already made from this model (judges sharing one).
        min_label_mass: verdicts whose answer labels carry less next-token probability than this are
            unusable ("no_label_mass"); 0 accepts any renormalised distribution.
        **options: `TemplateJudge` / `Judge` options (templates, cot, cache, examples, on_unusable, both_orders, calibration, name).
    """

    def __init__(
        self,
        model: str | Path | Any,
        tokenizer: Any = None,
        *,
        batch_size: int = 8,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cot_max_tokens: int = 64,
        min_label_mass: float = 0.0,
        engine: Any = "hf",
        **options: Any,
    ) -> None:
        from tandem.models.loading import load_causal_lm, load_tokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.source = model if isinstance(model, (str, Path)) else None  # where a vLLM engine starts from
        if isinstance(model, (str, Path)):
            self.identity = f"local:{Path(model).expanduser().resolve()}"
            tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
            model = load_causal_lm(model, dtype=dtype or torch.float32)
        else:
            self.identity = f"local:{type(model).__name__}@{id(model):x}"
            if tokenizer is None:
                raise ValueError("LocalJudge needs the model's tokenizer when given a model object")
        options.setdefault("name", self.identity)
        super().__init__(**options)
        self.model = model.to(device=device, dtype=dtype) if device is not None or dtype is not None else model
        self.model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.cot_max_tokens = cot_max_tokens
        self.min_label_mass = min_label_mass
        self.engine = engine
        self._generator = None  # made on the first reasoning request
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self._plans: dict[tuple[str, tuple[str, ...]], tuple[str, list[list[int]]]] = {}
        for template in (self.score_template, self.compare_template):
            self.reading_plan(template.verdict_prefix, template.answer_labels)

    def generator(self):
        """The engine that writes the reasoning: on this judge's model (hf), or vLLM from its directory."""
        from tandem.generation.engines import engine_for

        if not isinstance(self.engine, str):
            return self.engine
        if self._generator is None or self._generator[0] != self.engine:
            self._generator = (self.engine, engine_for(self.engine, self.model, self.tokenizer, self.source))
        return self._generator[1]

    def reading_plan(self, prefix: str, labels: list[str]) -> tuple[str, list[list[int]]]:
        """(text to append to the question, ids of each label's tokens at the position read next).

        The answer is written "PREFIX LABEL". When the tokenizer makes " LABEL" one token, the model is
        read right after PREFIX (the no-space spelling "LABEL" counts too); when it splits off the
        space (small BPE vocabularies), the model is read after "PREFIX " instead. Raises when a label
        is not a single token either way (use labels that are: a 0-9 scale, "A"/"B").
        """
        key = (prefix, tuple(labels))
        if key in self._plans:
            return self._plans[key]
        encode = lambda text: self.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        for joiner in ("", " "):
            base = encode(prefix + joiner)
            ids = []
            for label in labels:
                full = encode(f"{prefix} {label}")
                if len(full) != len(base) + 1 or full[: len(base)] != base:
                    break
                alone = encode(label)
                ids.append([full[-1]] + ([alone[0]] if joiner == "" and len(alone) == 1 and alone[0] != full[-1] else []))
            else:
                flat = [token for label_ids in ids for token in label_ids]
                if len(flat) != len(set(flat)):
                    raise ValueError(f"answer labels {labels} share tokens in this tokenizer")
                self._plans[key] = (prefix + joiner, ids)
                return self._plans[key]
        raise ValueError(
            f"answer labels {labels} are not each a single token after {prefix!r} in this tokenizer, so their "
            "probabilities cannot be read from one next-token distribution; use labels that are (a 0-9 scale, 'A'/'B')"
        )

    def render(self, messages: list[dict[str, str]]) -> str:
        """The question as model input text, ending where the assistant's answer begins."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "".join(f"{m['role']}: {m['content']}\n\n" for m in messages) + "assistant: "

    @torch.no_grad()
    def _ask(self, questions: list[Question]) -> list[Verdict]:
        texts = [self.render(q.messages) for q in questions]
        reasoning = [""] * len(questions)
        if any(q.cot for q in questions):
            generated = self.generator().sample(texts, max_new_tokens=self.cot_max_tokens, temperature=0.0,
                                                batch_size=self.batch_size).texts
            for i, (q, text) in enumerate(zip(questions, generated)):
                cut = text.lower().find(q.verdict_prefix.lower())  # the model may already write the prefix
                reasoning[i] = (text if cut < 0 else text[:cut]).rstrip() + "\n"
        plans = [self.reading_plan(q.verdict_prefix, q.labels) for q in questions]
        inputs = [text + extra + plan[0] for text, extra, plan in zip(texts, reasoning, plans)]
        verdicts: list[Verdict | None] = [None] * len(questions)
        order = sorted(range(len(questions)), key=lambda i: len(inputs[i]))  # similar lengths pad less
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            read = self._read([questions[i] for i in chunk], [inputs[i] for i in chunk], [plans[i][1] for i in chunk])
            for i, verdict in zip(chunk, read):
                verdicts[i] = verdict if not reasoning[i] else Verdict(
                    verdict.value, verdict.reason, reasoning[i] + verdict.raw, verdict.method, verdict.detail
                )
        return verdicts

    def _read(self, questions: list[Question], inputs: list[str], label_ids: list[list[list[int]]]) -> list[Verdict]:
        """Next-token label probabilities at the end of each input (one left-padded forward pass)."""
        device = next(self.model.parameters()).device
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            encoded = self.tokenizer(inputs, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            self.tokenizer.padding_side = side
        lengths = encoded["attention_mask"].sum(-1).tolist()
        too_long = [self.max_positions is not None and n > self.max_positions for n in lengths]
        results: list[Verdict] = []
        if not all(too_long):
            mask = encoded["attention_mask"].to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
            logits = self.model(
                input_ids=encoded["input_ids"].to(device), attention_mask=mask, position_ids=positions, use_cache=False
            ).logits[:, -1].float()
            probabilities = logits.softmax(-1).cpu()
        for row, question in enumerate(questions):
            if too_long[row]:
                results.append(unusable("too_long", detail=f"{lengths[row]} tokens > {self.max_positions} positions"))
                continue
            label_probs = [float(probabilities[row, token_ids].sum()) for token_ids in label_ids[row]]
            value, mass = expected_label_value(label_probs, question.values)
            raw = " ".join(f"{label}={p / mass if mass > 0 else 0.0:.4f}" for label, p in zip(question.labels, label_probs))
            raw += f" (label mass {mass:.4g})"
            if value is None or mass < self.min_label_mass:
                results.append(unusable("no_label_mass", raw, f"labels carry {mass:.3g} < {self.min_label_mass} of the probability", "token_probs"))
            else:
                results.append(Verdict(value, raw=raw, method="token_probs"))
        return results
