"""Studies of cheaper feedback for reward models, each training reward models on preference data
(`tandem.preference_data`) and measuring them against gold labels:

    from tandem.preference_studies.active import ActiveConfig, run_active_study           # `tandem active`
    from tandem.preference_studies.synthetic import SyntheticConfig, run_synthetic_study  # `tandem synth-prefs`
    from tandem.preference_studies.transfer import TransferConfig, run_transfer_study     # `tandem transfer-rm`

`measure` trains and scores the reward models all three share.
"""
