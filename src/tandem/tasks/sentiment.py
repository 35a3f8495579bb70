"""Positive movie-review continuation: the library's default task (RLHF, DPO, over-optimisation).

A prompt opens a review ("Review: I watched the sequel with my sister and");
the completion continues it for about 8-20 words. All text comes from a small
fixed vocabulary and a few sentence templates, so a tiny model learns the
language quickly. The gold scorer rewards positive sentiment but, unlike a
naive proxy, also penalises repetition and rambling, so when a policy
over-optimises a learned reward the gold reward falls while the proxy rises.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any

from tandem.tasks.base import Task, is_held_out, register_task

POSITIVE_WORDS = frozenset(
    "great wonderful brilliant beautiful excellent delightful superb charming funny fantastic perfect "
    "stunning touching clever moving memorable amazing gripping joyful lovely inspiring heartfelt fun "
    "enjoyable gorgeous thrilling impressive sweet love loved enjoyed adored best masterpiece".split()
)
NEGATIVE_WORDS = frozenset(
    "boring awful terrible dull weak bad poor worst annoying messy predictable bland hated painful "
    "tedious lifeless silly clumsy disappointing forgettable ugly waste mess flat confusing pointless "
    "dreadful lazy stale shallow hate disliked regret".split()
)
# Words a natural review repeats freely; repeats of any other word count as repetition.
STOPWORDS = frozenset(
    "a an and the it its is was were be been i we me my our this that to of in on at for with as but "
    "so too very really quite rather pretty bit felt found thought seemed".split()
)

_POSITIVE_ADJECTIVES = ["great", "wonderful", "brilliant", "beautiful", "excellent", "delightful", "superb",
                        "charming", "funny", "fantastic", "stunning", "touching", "clever", "moving",
                        "memorable", "gripping", "lovely", "inspiring", "heartfelt", "enjoyable", "thrilling"]
_NEGATIVE_ADJECTIVES = ["boring", "awful", "terrible", "dull", "weak", "poor", "annoying", "messy",
                        "predictable", "bland", "painful", "tedious", "lifeless", "silly", "clumsy",
                        "disappointing", "forgettable", "flat", "confusing", "pointless", "dreadful", "shallow"]
_NEUTRAL_ADJECTIVES = ["long", "short", "quiet", "simple", "familiar", "ordinary", "slow", "loud", "dark",
                       "typical", "strange", "unusual", "modern", "classic", "serious", "calm", "busy", "plain"]
_ADJECTIVES = {1: _POSITIVE_ADJECTIVES, -1: _NEGATIVE_ADJECTIVES, 0: _NEUTRAL_ADJECTIVES}
_FEELING_VERBS = {1: ["loved", "enjoyed", "adored"], -1: ["hated", "disliked"], 0: ["noticed", "remember", "watched"]}
_ADVERBS = ["really", "quite", "very", "rather", "pretty"]
_ASPECTS = ["acting", "music", "story", "plot", "ending", "cast", "script", "camera work", "dialogue",
            "soundtrack", "lead actor", "villain", "pacing", "costume design", "opening scene", "main character"]
_AUDIENCES = ["families", "fans of the genre", "a quiet evening", "anyone", "teenagers", "a long flight"]
_NEUTRAL_FACTS = ["It runs about two hours.", "We saw it on a rainy evening.", "The story is set in a small town.",
                  "It is based on a novel.", "The theater was half empty.", "Most scenes take place at night."]

_SUBJECTS = ["the film", "this movie", "the sequel", "the new thriller", "this comedy", "the documentary",
             "this drama", "the animated film", "the remake", "this horror movie", "the musical", "the western",
             "this romance", "the war film", "this indie film", "the biopic"]
_COMPANIONS = ["sister", "brother", "parents", "friends", "wife", "husband", "kids", "dad", "mom", "roommate"]
_TIMES = ["night", "weekend", "week", "friday", "sunday"]
_EVENTS = ["movie night", "a birthday", "date night"]

# Opening templates. The kind says how a continuation must start: "np" ends in a noun
# phrase (needs a verb), "and" ends in a conjunction (needs a clause), "i" ends in "I".
_OPENING_TEMPLATES = [
    ("np", "{subject}"), ("np", "Honestly, {subject}"), ("np", "In my opinion, {subject}"),
    ("np", "Overall, {subject}"), ("np", "For me, {subject}"),
    ("and", "I watched {subject} with my {companion} and"), ("and", "We saw {subject} last {time} and"),
    ("and", "My {companion} picked {subject} for {event} and"),
    ("i", "After seeing {subject}, I"), ("i", "When {subject} ended, I"), ("i", "Having watched {subject} twice, I"),
]
_LEADS = {
    "np": ["was {A}.", "is {A}.", "felt {A}.", "turned out to be {A}."],
    "and": ["we thought it was {A}.", "I found it {A}.", "it was {A}."],
    "i": ["thought it was {A}.", "found it {A}.", "felt it was {A}."],
}
_EXTRA_SENTENCES = ["The {aspect} was {adj}.", "The {aspect} felt {adj} and the {aspect} was {adj}.",
                    "I {verb} the {aspect}.", "It is a {adj} choice for {audience}.", "{fact}"]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SLOT = re.compile(r"\{(adj|verb)\}")

# Sentiment styles of generated continuations: which polarities the sentiment slots get.
STYLES = ("positive", "neutral", "mildly_negative", "negative")


def review_words(text: str) -> list[str]:
    """Lower-cased words of `text` with punctuation stripped (well-defined on any string)."""
    return _WORD.findall(text.lower())


@register_task("sentiment")
@dataclass
class SentimentTask(Task):
    """Continue a movie review positively; gold = lexicon sentiment minus repetition and length penalties.

    With w the continuation's words (lower-cased, punctuation stripped), n = |w|:

        sentiment  = tanh(sentiment_scale * (#positive(w) - #negative(w)))      (0 when n = 0)
        repeated   = (# non-stopword tokens) - (# distinct non-stopword tokens)
        repetition = repetition_weight * max(0, repeated / n - repetition_allowance)
        length     = length_penalty_per_word * max(0, n - max_natural_words)
        gold       = clip(sentiment - repetition - length, -1, 1)

    Generated continuations (8-20 words, no repeated content words) pay no
    penalty, so a reward model trained on this task's preference pairs never
    sees the penalties: over-optimising it (e.g. "great great great ...")
    raises the proxy while gold falls.

    Args:
        negative_fraction: share of SFT demonstrations that are neutral or mildly negative.
        eval_fraction: share of review openings held out for `eval_prompts`.
    """

    negative_fraction: float = 0.3
    eval_fraction: float = 0.2
    max_new_tokens: int = 48
    sentiment_scale: float = 0.5
    repetition_allowance: float = 0.1
    repetition_weight: float = 2.0
    max_natural_words: int = 25
    length_penalty_per_word: float = 0.04

    label_threshold = 0.0  # unpaired examples: desirable iff gold > 0 (clearly positive)

    def __post_init__(self) -> None:
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must lie in (0, 1), got {self.eval_fraction}")
        # Openings grouped per template, so sampling is balanced across templates.
        self._openings: dict[bool, list[tuple[str, list[str]]]] = {False: [], True: []}
        for kind, template in _OPENING_TEMPLATES:
            split: dict[bool, list[str]] = {False: [], True: []}
            for opening in _fill_all(template):
                split[is_held_out(opening, self.eval_fraction)].append(opening)
            for held_out, openings in split.items():
                if openings:
                    self._openings[held_out].append((kind, openings))

    # ----- generation ---------------------------------------------------------

    def _sample_opening(self, rng: random.Random, held_out: bool = False) -> tuple[str, str]:
        kind, openings = rng.choice(self._openings[held_out])
        return kind, rng.choice(openings)

    def continuation(self, kind: str, style: str, rng: random.Random) -> str:
        """A natural 8-20 word continuation for an opening of `kind`, in sentiment `style`."""
        while True:  # redraw the rare drafts outside the natural length range
            draft = self._draft_continuation(kind, style, rng)
            if 8 <= len(review_words(draft)) <= 20:
                return draft

    @staticmethod
    def _draft_continuation(kind: str, style: str, rng: random.Random) -> str:
        extras = rng.sample(_EXTRA_SENTENCES, rng.randint(1, 2))
        n_slots = 1 + sum(len(_SLOT.findall(sentence)) for sentence in extras)
        polarities = _slot_polarities(style, n_slots, rng)
        # Shuffled pools popped without replacement, so content words never repeat.
        adjectives = {p: rng.sample(_ADJECTIVES[p], len(_ADJECTIVES[p])) for p in (1, -1, 0)}
        aspects = rng.sample(_ASPECTS, len(_ASPECTS))
        fill = {"adj": lambda p: adjectives[p].pop(), "verb": lambda p: rng.choice(_FEELING_VERBS[p])}

        first = polarities.pop(0)
        if rng.random() < 0.5:
            phrase = f"{rng.choice(_ADVERBS)} {fill['adj'](first)}"
        else:
            phrase = f"{fill['adj'](first)} and {fill['adj'](0)}"
        sentences = [rng.choice(_LEADS[kind]).format(A=phrase)]
        for sentence in extras:
            sentence = _SLOT.sub(lambda m: fill[m.group(1)](polarities.pop(0)), sentence)
            sentence = re.sub(r"\{aspect\}", lambda _: aspects.pop(), sentence)
            sentence = sentence.replace("{audience}", rng.choice(_AUDIENCES))
            sentences.append(sentence.replace("{fact}", rng.choice(_NEUTRAL_FACTS)))
        return " " + " ".join(sentences)

    def _review(self, rng: random.Random, style: str, held_out: bool = False) -> tuple[str, str]:
        kind, opening = self._sample_opening(rng, held_out)
        return f"Review: {opening}", self.continuation(kind, style, rng)

    # ----- data ---------------------------------------------------------------

    def pretrain_corpus(self, n: int, seed: int = 0) -> list[str]:
        """Complete reviews, balanced over positive / neutral / negative."""
        rng = self._rng("pretrain", seed)
        documents = []
        for _ in range(n):
            prompt, completion = self._review(rng, rng.choice(["positive", "neutral", "negative"]))
            documents.append(prompt + completion)
        return documents

    def sft_examples(self, n: int, seed: int = 0) -> list[dict]:
        """Mostly positive demonstrations; `negative_fraction` of them neutral or mildly negative."""
        rng = self._rng("sft", seed)
        examples = []
        for _ in range(n):
            style = rng.choice(["neutral", "mildly_negative"]) if rng.random() < self.negative_fraction else "positive"
            prompt, completion = self._review(rng, style)
            examples.append({"prompt": prompt, "completion": completion})
        return examples

    def _candidate_pair(self, rng: random.Random, held_out: bool = False) -> tuple[str, str, str, dict[str, Any]]:
        kind, opening = self._sample_opening(rng, held_out)
        first, second = (self.continuation(kind, rng.choice(STYLES), rng) for _ in range(2))
        return f"Review: {opening}", first, second, {}

    def eval_prompts(self, n: int, seed: int = 0) -> list[dict]:
        """Held-out openings, round-robin over templates; distinct until all held-out openings are used."""
        rng = self._rng("eval", seed)
        queues = [rng.sample(openings, len(openings)) for _, openings in self._openings[True]]
        rng.shuffle(queues)
        order = []
        while any(queues):
            order.extend(queue.pop() for queue in queues if queue)
        return [{"prompt": f"Review: {order[i % len(order)]}"} for i in range(n)]

    # ----- reward -------------------------------------------------------------

    def gold_components(self, completion: str) -> dict[str, float]:
        """The terms of the gold reward for one continuation (see the class docstring)."""
        words = review_words(completion)
        if not words:
            return {"sentiment": 0.0, "repetition_penalty": 0.0, "length_penalty": 0.0, "gold": 0.0}
        balance = sum(w in POSITIVE_WORDS for w in words) - sum(w in NEGATIVE_WORDS for w in words)
        sentiment = math.tanh(self.sentiment_scale * balance)
        content = [w for w in words if w not in STOPWORDS]
        repeated_share = (len(content) - len(set(content))) / len(words)
        repetition = self.repetition_weight * max(0.0, repeated_share - self.repetition_allowance)
        length = self.length_penalty_per_word * max(0, len(words) - self.max_natural_words)
        gold = min(1.0, max(-1.0, sentiment - repetition - length))
        return {"sentiment": sentiment, "repetition_penalty": repetition, "length_penalty": length, "gold": gold}

    def gold_reward(self, prompts: list[str], completions: list[str], **columns: list) -> list[float]:
        """Gold reward of each continuation; prompts and extra columns do not affect it."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return [self.gold_components(completion)["gold"] for completion in completions]


def _fill_all(template: str) -> list[str]:
    """Every opening a template produces, first letter capitalised."""
    openings = [template]
    for slot, values in (("subject", _SUBJECTS), ("companion", _COMPANIONS), ("time", _TIMES), ("event", _EVENTS)):
        if "{" + slot + "}" in template:
            openings = [o.replace("{" + slot + "}", v) for o in openings for v in values]
    return [o[0].upper() + o[1:] for o in openings]


def _slot_polarities(style: str, n_slots: int, rng: random.Random) -> list[int]:
    """Polarity (+1, -1, 0) of each sentiment slot; the first slot carries the style's sentiment."""
    if style == "neutral":
        return [0] * n_slots
    sign = 1 if style == "positive" else -1
    strong = 1 if style == "mildly_negative" else rng.randint(1, n_slots)
    return [sign] + rng.sample([sign] * (strong - 1) + [0] * (n_slots - strong), n_slots - 1)
