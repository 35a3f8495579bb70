"""Pure functions for the math: tensors in, tensors out, each with its formula and a numeric test."""
