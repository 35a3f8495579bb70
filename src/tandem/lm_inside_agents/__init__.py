"""Language models inside RL agents: as world models, explorers, reward shapers, and language-conditioned policies.

Modules: `render` (text views of environment states), `backends` (one interface over language models),
`dqn` (DQN with LLM-guided exploration, after Du et al. 2023), `shaping` (potential-based LLM reward shaping,
Ng, Harada & Russell 1999), plus the LM world model and planning in it (Hao et al. 2023; Dyna, Sutton 1990),
the Decision Transformer (Chen et al. 2021) and language-conditioned BabyAI policies (Chevalier-Boisvert et al.
2019). Import the modules directly.
"""
