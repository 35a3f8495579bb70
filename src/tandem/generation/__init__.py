"""Sampling completions from causal LMs."""

from tandem.generation.sampling import generate_completions

__all__ = ["generate_completions"]
