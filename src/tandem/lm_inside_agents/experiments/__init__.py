"""The agents' experiments: runs that train, measure and write reports (metrics.json and plots), used by the CLI
(`tandem.lm_inside_agents.commands`) and the benchmarks. `explore` (explore, shape), `dt` (collect, dt), `world_model`
(world-model) and `babyai` (babyai)."""
