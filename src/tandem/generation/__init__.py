"""Sampling completions from causal LMs, and scoring given completions."""

from tandem.generation.sampling import Samples, generate_completions, sample
from tandem.generation.scoring import completion_log_probs

__all__ = ["Samples", "completion_log_probs", "generate_completions", "sample"]
