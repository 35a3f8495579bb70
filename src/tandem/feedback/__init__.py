"""Cheaper feedback for reward models: active selection of pairs to label, synthetic preferences, reward-model
transfer.

    from tandem.feedback.active import ActiveConfig, run_active_study        # `tandem active`
    from tandem.feedback.synthetic import SyntheticConfig, run_synthetic_study  # `tandem synth-prefs`
    from tandem.feedback.transfer import TransferConfig, run_transfer_study     # `tandem transfer-rm`

Acquisition rules (`ACQUISITION_RULES`: random, disagreement, entropy, bald) and corruptions
(`CORRUPTIONS`: shuffle, truncate, replace) are registries of pure functions; judges (callables
returning P(A better)) stand in for the human labeller.
"""
