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
