"""Preference data: pairs of responses and the labels that rank them, below the trainers that learn from them.

`pairs` (the one sampler of two responses per prompt; pairs ranked by a gold reward, for DPO), `labels` (the one
rule from a judge's verdicts to labels, and the labellers standing in for a human: gold, rule, any
`tandem.judges.Judge`), `synthetic_pairs` (rule-labelled pairs from corruptions, temperatures, checkpoints),
`acquisition` (active-learning rules: which pair to label next) and `reward_heads` (the ensemble of reward
heads on frozen features those rules read). The studies built on them are `tandem.preference_studies`.
"""
