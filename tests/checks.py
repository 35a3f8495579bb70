"""Assertions and small problems shared by several test files."""

import torch
from safetensors.torch import load_file


def read_weights(folder):
    """All tensors of a saved model directory, by name."""
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(first, second, atol=0.0):
    a, b = read_weights(first), read_weights(second)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=0), f"{name} differs: {(a[name] - b[name]).abs().max()}"


def max_weight_change(first, second) -> float:
    a, b = read_weights(first), read_weights(second)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def max_weight_difference(first, second, file="model.safetensors", shared_only=False) -> float:
    """Largest absolute difference between two saved models' tensors (the same names, or with `shared_only` the
    names both have: a reward model against its base)."""
    a, b = load_file(str(first / file)), load_file(str(second / file))
    assert shared_only or a.keys() == b.keys(), set(a) ^ set(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a if k in b)


def linear_preference_problem(n: int, dim: int = 8, seed: int = 0):
    """Pairs of random features, labelled by a hidden linear reward."""
    generator = torch.Generator().manual_seed(seed)
    a, b, w = torch.randn(n, dim, generator=generator), torch.randn(n, dim, generator=generator), torch.randn(dim, generator=generator)
    return a, b, ((a - b) @ w > 0).float()


def require_vllm() -> None:
    """At the top of a vLLM test module: an in-process engine with a small CPU KV cache; where vLLM is missing
    the module skips, except in `.ci/run`'s vLLM stage (TANDEM_REQUIRE_VLLM), where a broken install fails."""
    import os

    import pytest

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if os.environ.get("TANDEM_REQUIRE_VLLM"):
        import vllm  # noqa: F401
    else:
        pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'tandem[vllm]')")


def wait_for(condition, seconds=10.0) -> bool:
    """Poll `condition` every 20 ms until it holds (True) or `seconds` pass (False)."""
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
