"""Trainers: each says how to batch its data and what its loss is; `loop.Trainer` does the rest."""
