"""Language models inside RL agents (seed section 4, 5.2, 5.3; SPEC.md Part B).

Modules: `render` (text views of environment states), `backends` (one interface over language models),
`dqn` (DQN with LLM-guided exploration, eq. 11), `shaping` (potential-based LLM reward shaping, eq. 12),
plus the world model, Decision Transformer and language-conditioned policies. Import the modules directly.
"""
