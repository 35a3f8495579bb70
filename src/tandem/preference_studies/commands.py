"""`tandem active`, `tandem synth-prefs` and `tandem transfer-rm`: the cheaper-feedback studies on the command line."""

from __future__ import annotations


def register(add_command) -> None:
    """Add the feedback commands with `add_command(name, config_class, run, help)` (see `tandem.cli`)."""
    from tandem.preference_studies.active import ActiveConfig, run_active_study
    from tandem.preference_studies.synthetic import SyntheticConfig, run_synthetic_study
    from tandem.preference_studies.transfer import TransferConfig, run_transfer_study

    add_command("active", ActiveConfig, run_active_study,
                "Active learning for preference labels: labels each acquisition rule (random, ensemble disagreement, "
                "predictive entropy, BALD) needs to reach a held-out reward-model accuracy, the gold scorer as the human.")
    add_command("synth-prefs", SyntheticConfig, run_synthetic_study,
                "Synthetic preference pairs (corrupted responses, temperatures, checkpoints) labelled by a rule or the gold "
                "scorer; with --compare, reward models trained on them vs gold-labelled pairs vs no training.")
    add_command("transfer-rm", TransferConfig, run_transfer_study,
                "Transfer a reward model to a new task with k labels vs training a fresh head on the same k labels.")
