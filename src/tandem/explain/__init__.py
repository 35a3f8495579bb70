"""Interpretability (post-hoc explanation): why a reward model scores a response as it does, and where a policy moved.

    from tandem.explain.attribution import explain_reward, explain_policy_shift
    from tandem.explain.commands import ExplainConfig, run_explain      # `tandem explain`

Integrated gradients and occlusion attribute a reward model's score to tokens; per-token log-prob
change and next-token KL show where a policy departs from its reference; `report` renders both as
HTML with coloured tokens and as PNG plots.
"""
