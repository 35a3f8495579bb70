"""A seeded generator of faulty reward functions, and the rule `score_safely` keeps for each.

A faulty reward returns, for some samples, a value that cannot be trained on (NaN, inf, 1e300,
10**400, a string, a complex number, a NaN tensor, an object whose float() raises), or a container of
the wrong kind or length; or it raises (any exception, SystemExit included) on some samples or only
on batches; or it edits its input lists; or it hangs past the timeout. The rule, in both modes: no
exception other than `RewardError` ("raise") and none at all ("skip"); every reward returned is None
or a finite float within the bound; under "skip" exactly the faulty samples are left out when the
fault is per sample; the caller's lists are unchanged; and the call ends within the timeout (plus
slack). `tests/fuzz/test_fuzz_inputs.py` runs a few hundred cases, `benchmarks/fuzz_inputs.py rewards` thousands.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import torch

from tandem.rewards import RewardError
from tandem.rewards.safety import score_safely

BOUND = 1e6
TIMEOUT = 0.3


class BadFloat:
    def __float__(self):
        raise ArithmeticError("no float for you")


BAD_VALUES = [float("nan"), float("inf"), -float("inf"), 1e300, -1e7, 10**400, "0.5", complex(1, 1), [0.5],
              np.float32("nan"), torch.tensor(float("nan")), Decimal("NaN"), BadFloat(), {"r": 1}, b"1"]
GOOD_VALUES = [0.0, 1, -0.5, 0.25, True, np.float64(0.75), torch.tensor(0.5), None]
ERRORS = [ValueError("bad"), KeyError("k"), ZeroDivisionError("zero"), RecursionError("deep"), MemoryError(),
          SystemExit(0), SystemExit(1), AssertionError(), TypeError("t"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "x")]


@dataclass
class RewardCase:
    name: str
    reward: object
    bad: set[int] | None  # the samples that must be skipped (None: not known per sample)
    slow: bool = False
    batch_only: bool = False  # fails on batches, fine one at a time: "raise" refuses it, "skip" keeps every sample


def make_case(rng: random.Random, n: int) -> RewardCase:
    bad = {i for i in range(n) if rng.random() < 0.4}
    roll = rng.random()
    if roll < 0.35:  # a bad value on some samples
        value = rng.choice(BAD_VALUES)
        good = [rng.choice(GOOD_VALUES) for _ in range(n)]

        def reward(prompts, completions, **columns):
            return [value if int(c.split("-")[1]) in bad else good[int(c.split("-")[1])] for c in completions]
        return RewardCase(f"value {value!r:.20}", reward, bad)
    if roll < 0.55:  # raises on some samples
        error = rng.choice(ERRORS)

        def reward(prompts, completions, **columns):
            if any(int(c.split("-")[1]) in bad for c in completions):
                raise error
            return [0.5] * len(completions)
        return RewardCase(f"raises {type(error).__name__} on some", reward, bad)
    if roll < 0.65:  # fails only on batches
        def reward(prompts, completions, **columns):
            if len(completions) > 1:
                raise RuntimeError("batch too big")
            return [1.0]
        return RewardCase("fails on batches only", reward, set(), batch_only=True)
    if roll < 0.8:  # a container of the wrong kind or length
        shape = rng.choice(["longer", "shorter", "none", "scalar", "dict", "string", "generator", "tensor",
                            "array", "nested"])

        def reward(prompts, completions, **columns):
            k = len(completions)
            return {"longer": [0.0] * (k + 1), "shorter": [0.0] * (k - 1), "none": None, "scalar": 0.5,
                    "dict": {i: 0.0 for i in range(k)}, "string": "x" * k, "generator": (0.1 for _ in range(k)),
                    "tensor": torch.full((k,), 0.5), "array": np.full(k, 0.5), "nested": [[0.5]] * k}[shape]
        return RewardCase(f"returns {shape}", reward, None)
    if roll < 0.95:  # edits its inputs
        def reward(prompts, completions, **columns):
            scores = [0.5] * len(completions)
            prompts.clear(), completions.append("extra"), columns.get("answer", []).reverse()
            return scores
        return RewardCase("mutates its inputs", reward, set())

    def reward(prompts, completions, **columns):  # hangs
        time.sleep(TIMEOUT * 4)
        return [0.0] * len(completions)
    return RewardCase("hangs", reward, None, slow=True)


def run_case(case: RewardCase, mode: str, n: int) -> tuple[str, str]:
    """('ok', detail) when the rule holds, else (what broke, detail)."""
    prompts = [f"p-{i}" for i in range(n)]
    completions = [f"c-{i}" for i in range(n)]
    columns = {"answer": [str(i) for i in range(n)]}
    copies = (list(prompts), list(completions), {k: list(v) for k, v in columns.items()})
    started = time.monotonic()
    try:
        scored = score_safely(case.reward, prompts, completions, columns, on_error=mode, bound=BOUND, timeout=TIMEOUT)
    except RewardError as error:
        if mode == "skip":
            return "raised_in_skip", str(error)[:200]
        if case.bad == set() and not (case.batch_only and n > 1):
            return "raised_on_good", str(error)[:200]
        return "ok", "RewardError"
    except BaseException as error:  # noqa: BLE001 - that is the point
        return "other_exception", f"{type(error).__name__}: {error}"
    finally:
        seconds = time.monotonic() - started
    if seconds > TIMEOUT + 10:  # a hang, not a busy machine
        return "slow", f"{seconds:.1f}s"
    if (prompts, completions, columns) != copies:
        return "inputs_changed", ""
    for reward in scored.rewards:
        if reward is not None and (not isinstance(reward, float) or not math.isfinite(reward) or abs(reward) > BOUND):
            return "bad_reward_returned", repr(reward)
    if mode == "raise" and (case.bad or (case.batch_only and n > 1)):
        return "accepted_bad", f"{case.name}: {scored.rewards}"
    if mode == "skip" and case.bad is not None and scored.report.skipped_indices != case.bad:
        return "wrong_skips", f"skipped {sorted(scored.report.skipped_indices)}, bad {sorted(case.bad)}"
    return "ok", f"skipped {scored.report.n_skipped}"
