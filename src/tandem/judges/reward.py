"""A judge as a reward source for tandem's RL trainers: the AI-feedback reward r_C(x, y) of RLAIF (Lee et al. 2023),
maximised as E[r_C(x, y)] - beta KL(p_theta || p_ref).

    reward = JudgeReward(judge)                          # r = judge score of the completion, in [0, 1]
    reward = JudgeReward(judge, reference="reference")   # r = P(completion better than columns["reference"])
    scored = score_safely(reward, prompts, completions, columns, on_error="skip")

It fits the `tandem.rewards.RewardSource` protocol. An unusable verdict gives None under the judge's
"skip" policy (the sample is dropped and counted by `score_safely` as not applicable; the judge itself
counts and logs it, see `judge.stats`), 0.5 under "neutral", and raises under "raise".
"""

from __future__ import annotations

from tandem.judges.base import Judge


class JudgeReward:
    """A `RewardSource` whose rewards are a judge's verdict values (None where unusable and skipped).

    Args:
        judge: any `Judge`.
        reference: name of a dataset column holding a reference response per sample; when given, the
            reward is the probability that the completion beats it (`judge.compare`), else `judge.score`.
        scale, shift: reward = shift + scale * value (e.g. scale=2, shift=-1 maps [0, 1] to [-1, 1]).
        name: how the source is reported (default "judge:<judge name>").
    """

    def __init__(self, judge: Judge, reference: str | None = None, scale: float = 1.0, shift: float = 0.0,
                 name: str | None = None) -> None:
        self.judge, self.reference, self.scale, self.shift = judge, reference, scale, shift
        self.name = name or f"judge:{judge.name}"
        self.last_verdicts: list = []

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
        if self.reference is None:
            verdicts = self.judge.score(prompts, completions)
        else:
            if self.reference not in columns:
                raise KeyError(f"reward {self.name!r} compares with column {self.reference!r}, which the data lacks "
                               f"(columns: {sorted(columns) or 'none'})")
            verdicts = self.judge.compare(prompts, completions, [str(r) for r in columns[self.reference]])
        self.last_verdicts = verdicts
        return [None if v.value is None else self.shift + self.scale * v.value for v in verdicts]
