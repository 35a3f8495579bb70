"""`tandem agent-rl`: the language model itself as the policy pi(a | s, l), trained by RL over many turns.

Multi-turn episodes are a rollout kind (`EpisodeRollouts`) of the one online RL trainer
(`tandem.trainers.online`), as verl's agent loop feeds its PPO trainer: each step takes `batch_size` training
start states (seeds: maps, missions, problems), plays `episodes_per_start` episodes from each with the current
policy (all active episodes' turns in one engine call per turn; the ids trained on are exactly the ids sampled),
and hands the episodes to the trainer as rows (`episode_batch`), which computes advantages, the loss on the
model's own tokens only, and the update, exactly as for single-turn GRPO and PPO.

Credit (``--advantage``, the advantage registry):
- score-only estimators (``grpo``, ``dr_grpo``, ``rloo``, ...): trajectory level. An episode's return (environment
  rewards, plus LM shaping when on) is compared within its group of episodes from the same start state (Shao et
  al. 2024; Liu et al. 2025; Ahmadian et al. 2024), every token of every turn of the episode getting the advantage.
- ``gae``: a value head and GAE over the model's tokens with each turn's reward on its last token (the
  environment's tokens skipped, as in verl's multi-turn PPO); with ``--history none`` each turn's row is
  bootstrapped from the value of the next turn's state.

Before RL, ``--demonstrations`` clones an expert (`tandem.lm_as_agent.demonstrations`) in the same rendering.
`--filter-ratio` keeps only the groups whose returns vary most (RAGEN's rollout filtering, Wang et al. 2025).
Evaluation plays held-out start states (seeds the training never uses) and reports the success rate, return,
invalid-action rate and turns, before training (after any warm start) and after; transcripts of the first and
last evaluation, `metrics.jsonl`, `curves.png` and `report.json` go to the run directory.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from transformers import set_seed

from tandem.config import InputPath
from tandem.lm_as_agent.env import EnvSuite, check_env_spec, make_env_suite
from tandem.lm_as_agent.rollout import (
    Episode, RolloutOptions, chat_format, episode_batch, episode_sampling, model_sampler, play_text_episodes,
)
from tandem.algorithms.advantages import NEEDS_VALUES
from tandem.files import atomic_write_text, write_json
from tandem.generation.rollout import SamplingConfig
from tandem.models.loading import add_lora, load_causal_lm, load_tokenizer
from tandem.plotting import headless_pyplot
from tandem.trainers.grpo import GRPOTrainer, OverlongOptions
from tandem.trainers.online import RLOptions
from tandem.trainers.ppo import CriticOptions, PPOTrainer
from tandem.trainers.rollout_kinds import RolloutKind, Sampled
from tandem.trainers.setup import prepare_run
from tandem.trainers.loop import TrainResult


class AgentRLConfig(RLOptions, CriticOptions, OverlongOptions):
    """Multi-turn RL of a language-model agent in a text environment."""

    out: Path = Field(Path("runs/agent-rl"), description="Run directory: config, metrics, transcripts, curves, report and the model.")
    model: Path = Field(Path("tiny"), description="The policy: a Hugging Face model directory, a .gguf file or a LoRA adapter folder; 'tiny' builds a tiny model that acts uniformly at random among valid actions (in OUT/init) to start from.")
    env: str = Field("frozenlake:size=4", description="Environment: a Gymnasium id (CliffWalking-v1, BabyAI-GoToObj-v0, ...) or a kind: frozenlake:size=4, corridor:length=3, babyai:GoToObj, task:arithmetic, tools:..., textarena:GAME, textworld:..., openenv:PACKAGE.MODULE.CLASS, worldmodel:PATH.")
    max_turns: int | None = Field(None, ge=1, description="Turns before an episode is cut (marked truncated; default: the environment's).")
    history: Literal["full", "none"] = Field("full", description="full: the whole conversation in context (one training row per episode); none: each turn sees the instructions and the current observation only (Markov worlds; far cheaper).")
    max_context: int = Field(2048, ge=16, description="Tokens an episode may hold (history full); one that cannot fit another reply ends, truncated.")
    invalid_action: Literal["penalty", "retry", "end"] = Field("penalty", description="A reply naming no action: penalty (reward --invalid-penalty, asked again), retry (asked again, no penalty) or end (the episode ends with the penalty).")
    invalid_penalty: float = Field(-0.1, description="Reward of an invalid action.")
    prefill_memory: float = Field(0.0, ge=0, description="GB of activations the rollout's prompt forward may keep for the update (tandem.generation.prefill_graph; 0: off, the default): when one optimizer step follows each rollout on its sampling weights (the single pass), with generate on the trained model and one process, the update computes only each reply over the prompts' kept keys and values, not each prompt again; the gradient is the same. On a 2-core CPU it saves no time (holding the activations costs what recomputing them does: benchmarks/RESULTS.md), hence off.")
    batch_size: int = Field(4, ge=1, description="Training start states per step.")
    episodes_per_start: int = Field(8, ge=1, description="Episodes from each start state: the group of trajectory-level GRPO / RLOO.")
    filter_ratio: float = Field(1.0, gt=0, le=1, description="Train on this fraction of each step's groups, those whose returns vary most (RAGEN's rollout filtering; 0.25-0.5 keeps a run out of the 'echo trap' of equal returns; 1: all).")
    micro_batch_size: int = Field(64, ge=1, description="Most training rows per forward pass in the update; --micro-batch-memory sets fewer where they would not fit (the instructions every turn shares count once per forward).")
    n_train_starts: int = Field(1000, ge=1, description="Training start states (seeds 0..N-1).")
    n_eval: int = Field(64, ge=0, description="Held-out start states for evaluation (seeds training never uses).")
    eval_temperature: float | None = Field(None, ge=0, description="Sampling temperature of evaluation episodes (default: --temperature, the policy RL trains; 0: greedy).")
    eval_zero_shot: bool = Field(True, description="Evaluate before the first update too (the zero-shot success rate, or the warm start's).")
    max_new_tokens: int = Field(32, ge=1, description="Longest reply per turn.")
    advantage: str = Field("grpo", description="Credit: a score-only estimator (grpo, dr_grpo, rloo, ...: trajectory level, per group of episodes) or gae (turn rewards, value head).")
    gamma: float = Field(0.99, ge=0, le=1, description="Discount (gae, and the shaping term gamma Phi(s') - Phi(s)).")
    kl_coef: float = Field(0.0, ge=0, description="Weight of the per-token KL to the reference (0: no reference loaded).")
    shaping_model: InputPath | None = Field(None, description="A language model rating progress 0-9 (tandem.lm_inside_agents.backends.HFBackend): potential-based shaping gamma Phi(s') - Phi(s) added to each turn's reward.")
    shaping_scale: float = Field(1.0, description="Phi = scale x the shaping model's progress rating in [0, 1].")
    transcripts: int = Field(4, ge=0, description="Evaluation episodes written to transcripts/ at the first and the last evaluation.")
    demonstrations: str | None = Field(None, description="Warm start before RL by supervised fine-tuning on demonstrations (loss on the assistant turns, rendered as RL renders episodes): 'expert' (the environment's built-in expert: FrozenLake shortest path, BabyAIBot, a task's answers) or a JSONL file of episodes in the messages format.")
    demo_episodes: int = Field(200, ge=1, description="Expert episodes to clone (--demonstrations expert).")
    demo_epsilon: float = Field(0.1, ge=0, le=1, description="The expert takes a uniformly random action with this probability (room for RL to improve).")
    warm_start_steps: int = Field(100, ge=1, description="Optimizer steps of the warm start.")
    warm_start_lr: float | None = Field(None, gt=0, description="Learning rate of the warm start (default: SFT's, 2e-5 for pretrained models).")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of AdamW (pretrained models: 1e-5).")
    max_steps: int | None = Field(30, ge=1, description="RL steps to run.")
    log_every: int = Field(1, ge=1, description="Write metrics every N steps.")

    # a pretrained model: a fine-tuning learning rate (measured on SmolLM2-135M-Instruct; tiny models need ~1e-3)
    pretrained_defaults = {"lr": 1e-5}

    @field_validator("env")
    @classmethod
    def _known_env(cls, value: str) -> str:
        return check_env_spec(value)

    @model_validator(mode="after")
    def _demonstrations_exist(self) -> AgentRLConfig:
        if self.demonstrations not in (None, "expert") and not Path(self.demonstrations).is_file():
            raise ValueError(f"--demonstrations {self.demonstrations!r}: neither 'expert' nor an existing JSONL file")
        return self


def episode_metrics(episodes: list[Episode]) -> dict[str, float]:
    n = max(len(episodes), 1)
    turns = sum(len(e.turns) for e in episodes)
    return {
        "success_rate": sum(e.success for e in episodes) / n,
        "return": sum(e.env_return for e in episodes) / n,
        "invalid_rate": sum(e.invalid_actions for e in episodes) / max(turns, 1),
        "turns": turns / n,
        "truncated_fraction": sum(e.truncated for e in episodes) / n,
        "tool_calls": sum(t.tool for e in episodes for t in e.turns) / n,
        "tool_call_rate": sum(any(t.tool for t in e.turns) for e in episodes) / n,  # episodes calling a tool
        "cut_reply_fraction": sum(not t.ended for e in episodes for t in e.turns) / max(turns, 1),
    }


def env_steps(episodes: list[Episode]) -> int:
    """Actions the environment carried out (invalid replies and tool calls do not step it)."""
    return sum(not t.invalid and not t.tool for e in episodes for t in e.turns)


def filter_groups(episodes: list[Episode], ratio: float) -> list[Episode]:
    """RAGEN's rollout filtering (Wang et al. 2025): the episodes of the ceil(ratio x groups) groups whose returns
    have the largest standard deviation (ties: the earlier group), in their original order."""
    if ratio >= 1:
        return episodes
    returns: dict[int, list[float]] = {}
    for e in episodes:
        returns.setdefault(e.group, []).append(e.total_reward)
    spread = {g: float(torch.tensor(r).std(unbiased=False)) if len(r) > 1 else 0.0 for g, r in returns.items()}
    keep = set(sorted(spread, key=lambda g: -spread[g])[:max(1, math.ceil(ratio * len(spread)))])
    return [e for e in episodes if e.group in keep]


class EpisodeRollouts(RolloutKind):
    """Multi-turn episodes of the trainer's policy in an environment, as rows of the one RL trainer."""

    def __init__(self, trainer, suite: EnvSuite, chat: bool, shaping=None):
        cfg: AgentRLConfig = trainer.config
        self.trainer, self.suite, self.shaping, self.group_size = trainer, suite, shaping, cfg.episodes_per_start
        self.format = chat_format(trainer.tokenizer, chat)
        self.options = RolloutOptions(max_turns=cfg.max_turns or suite.max_turns, max_context=cfg.max_context,
                                      history=cfg.history)
        self.sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                       top_p=cfg.top_p, top_k=cfg.top_k)
        self.train_envs = [suite.make("train") for _ in range(cfg.batch_size // trainer.world * cfg.episodes_per_start)]
        self.eval_envs: list = []
        self.real_env_steps = 0
        self.evaluations: list[dict] = []

    def _sampler(self, model, sampling: SamplingConfig, key_base: int, graph=None):
        """The policy's turns: the engine's when it holds its own copy of the weights (vLLM, synced after every
        update), else `generate` on `model` in the update's precision (bf16 on AMX CPUs and GPUs)."""
        trainer = self.trainer
        config = episode_sampling(sampling, self.format)
        if trainer.engine.owns_weights:
            return model_sampler(None, trainer.tokenizer, config, engine=trainer.engine, key_base=key_base)
        sample = model_sampler(model, trainer.tokenizer, config, key_base=key_base,
                               keep_cache=trainer.config.history == "full", graph=graph)

        def in_precision(prompts, places):
            with trainer.accelerator.autocast():
                return sample(prompts, places)
        return in_precision

    def sample(self, step: int, times: dict[str, float]) -> Sampled:
        trainer, cfg = self.trainer, self.trainer.config
        indices = trainer._global_indices(step)
        share = len(indices) // trainer.world
        starts = [trainer.train_data[i] for i in indices[trainer.rank * share:(trainer.rank + 1) * share]]
        seeds = [s for s in starts for _ in range(self.group_size)]
        groups = [k for k in range(len(starts)) for _ in range(self.group_size)]
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        key_base = ((cfg.seed * 1_000_003 + step) * 101 + trainer.rank) * 1_048_583
        graph = trainer.prefill_graph()  # the prompts' forward, kept for the update when it can use it
        sampler = self._sampler(trainer.accelerator.unwrap_model(trainer.model), self.sampling, key_base, graph)
        episodes = play_text_episodes(None, trainer.tokenizer, self.format, self.train_envs, seeds, groups, self.sampling,
                                self.options, shaping=self.shaping, gamma=cfg.gamma, timings=timings, sampler=sampler)
        times["time/generate"] = timings.get("generate", 0.0)
        times["time/env"] = timings.get("env", 0.0)
        self.real_env_steps += int(trainer._all_reduce_sum([env_steps(episodes)])[0])
        stats = {**episode_metrics(episodes), "env_steps": float(self.real_env_steps),
                 "time/episodes": time.perf_counter() - t0}
        kept = filter_groups(episodes, cfg.filter_ratio)
        stats["filter/kept_fraction"] = len(kept) / len(episodes)
        batch = episode_batch(kept, cfg.history, trainer.tokenizer.pad_token_id).to(trainer.accelerator.device)
        scores = batch.step_rewards.sum(-1)
        stats.update(rows=float(len(scores)), sampled_tokens=float(batch.completion_mask.sum()),
                     row_width=float(batch.input_ids.shape[1]))
        if graph is not None:
            stats["prefill_kept_tokens"] = float(graph.tokens)
        return Sampled(batch, scores, torch.ones_like(scores, dtype=torch.bool), stats, prefill=graph)

    def play(self, model, seeds: list[int], temperature: float, split: str = "eval") -> list[Episode]:
        """Episodes of `model` from start states `seeds` of `split`, 32 at a time, with draws keyed by the seed (the
        same noise at every evaluation; the training RNG untouched)."""
        cfg = self.trainer.config
        sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=temperature, top_p=cfg.top_p,
                                  top_k=cfg.top_k)
        if len(self.eval_envs) < min(len(seeds), 32):
            self.eval_envs += [self.suite.make(split) for _ in range(min(len(seeds), 32) - len(self.eval_envs))]
        episodes = []
        for start in range(0, len(seeds), 32):
            chunk = seeds[start:start + 32]
            sampler = self._sampler(model, sampling, (cfg.seed + 99_991) * 1_048_583 + start * 4099)
            episodes += play_text_episodes(None, self.trainer.tokenizer, self.format, self.eval_envs[:len(chunk)], chunk,
                                     chunk, sampling, self.options, sampler=sampler)
        return episodes

    def evaluate(self, model) -> dict[str, float]:
        trainer, cfg = self.trainer, self.trainer.config
        if not cfg.n_eval:
            return {}
        temperature = cfg.temperature if cfg.eval_temperature is None else cfg.eval_temperature
        episodes = self.play(model, list(range(cfg.n_eval)), temperature)
        metrics = {f"eval/{k}": v for k, v in episode_metrics(episodes).items()}
        successes = sum(e.success for e in episodes)
        low, high = wilson_interval(successes, len(episodes))
        metrics.update({"eval/success_low": low, "eval/success_high": high, "eval/env_steps_trained": float(self.real_env_steps)})
        step = int(trainer.scheduler.last_epoch) // max(trainer.optimizer_steps_per_step(), 1)
        self.evaluations.append({"step": step, **metrics})
        if cfg.transcripts:
            folder = trainer.out / "transcripts"
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / f"eval-step-{step:06d}.txt", "\n".join(e.transcript() for e in episodes[:cfg.transcripts]))
        return metrics

    def state(self) -> dict:
        return {"env_steps": self.real_env_steps, "evaluations": self.evaluations}

    def load_state(self, state: dict) -> None:
        self.real_env_steps = int(state.get("env_steps", 0))
        self.evaluations = list(state.get("evaluations", []))

    def finish(self, result: TrainResult) -> None:
        cfg, out = self.trainer.config, self.trainer.out
        first = self.evaluations[0] if self.evaluations else {}
        last = self.evaluations[-1] if self.evaluations else {}
        report = {"env": cfg.env, "steps": result.steps, "seconds": round(result.seconds, 1),
                  "env_steps": self.real_env_steps, "history": cfg.history, "advantage": cfg.advantage,
                  "before": first, "after": last, "evaluations": self.evaluations}
        write_json(out / "report.json", report)
        plot_curves(out / "metrics.jsonl", out / "curves.png", cfg.env)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a success rate (Wilson 1927): sound at 0 and 1 successes, unlike p +- z se."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def plot_curves(metrics_file: Path, path: Path, title: str) -> None:
    """Success rate and return against RL steps (training episodes, and held-out evaluations)."""
    plt = headless_pyplot()

    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key in zip(axes, ("success_rate", "return")):
        train = [(r["step"], r[f"train/{key}"]) for r in records if f"train/{key}" in r]
        evals = [(r["step"], r[f"eval/{key}"]) for r in records if f"eval/{key}" in r]
        if train:
            ax.plot(*zip(*train), label="training episodes", alpha=0.7)
        if evals:
            ax.plot(*zip(*evals), "o-", label="held-out start states")
        ax.set_xlabel("RL step")
        ax.set_ylabel(key.replace("_", " "))
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def shaping_potential(config: AgentRLConfig):
    """Phi(observation) from --shaping-model: the model's expected progress rating, scaled (None when off)."""
    if config.shaping_model is None:
        return None
    from tandem.lm_inside_agents.backends import HFBackend
    from tandem.lm_inside_agents.render import goal_text

    backend = HFBackend(config.shaping_model)
    return lambda observation: config.shaping_scale * backend.rate_progress(observation, goal_text(observation) or config.env)


def starting_model(config: AgentRLConfig, suite: EnvSuite) -> Path:
    """--model, or for 'tiny' a tiny model acting at random among valid actions (built once in OUT/init)."""
    if str(config.model) != "tiny" or Path("tiny").exists():
        return config.model
    from tandem.lm_as_agent.warmstart import build_random_policy

    init = Path(config.out) / "init"
    if not (init / "config.json").exists():
        print(f"[tandem] --model tiny: a tiny model acting at random among valid actions, in {init}", flush=True)
        build_random_policy(suite, init, seed=config.seed)
    return init


def warm_start(config: AgentRLConfig, suite: EnvSuite, model_path: Path) -> Path:
    """Supervised fine-tuning on --demonstrations before RL (in OUT/warm-start; reused when already there)."""
    from tandem.lm_as_agent.demonstrations import episodes_from_messages, expert_episodes, sft_examples
    from tandem.trainers.sft import SFTConfig, SFTTrainer

    folder = Path(config.out) / "warm-start"
    if (folder / "model" / "config.json").exists():
        print(f"[tandem] warm start: reusing {folder / 'model'}", flush=True)
        return folder / "model"
    tokenizer = load_tokenizer(model_path)
    # not padding-free: an agent's turns share their instructions, which the shared-prefix forward computes once
    sft = SFTConfig(out=folder, model=model_path, max_steps=config.warm_start_steps, batch_size=16,
                    micro_batch_size=16, padding_free=False, max_length=config.max_context, threads=config.threads, seed=config.seed,
                    mixed_precision=config.mixed_precision, progress=config.progress, chat_template=config.chat_template,
                    lora_rank=config.lora_rank, lora_alpha=config.lora_alpha, merge_lora=bool(config.lora_rank),
                    **({"lr": config.warm_start_lr} if config.warm_start_lr else {}))
    setup = prepare_run(sft, tokenizer)
    fmt = chat_format(tokenizer, setup.chat)
    options = RolloutOptions(max_turns=config.max_turns or suite.max_turns, max_context=config.max_context,
                             history=config.history)
    if config.demonstrations == "expert":
        # start states past the RL run's training seeds: demonstrations never show the episodes RL trains on
        episodes = expert_episodes(suite, fmt, tokenizer, config.demo_episodes, options, config.demo_epsilon,
                                   config.seed, first_seed=config.n_train_starts)
        rate = sum(e.success for e in episodes) / len(episodes)
        print(f"[tandem] warm start: {len(episodes)} expert episodes (epsilon {config.demo_epsilon}), success {rate:.2f}",
              flush=True)
    else:
        episodes = episodes_from_messages(Path(config.demonstrations), fmt)
    examples = sft_examples(episodes, config.history)
    policy = load_causal_lm(model_path)
    if config.lora_rank:
        policy = add_lora(policy, config.lora_rank, config.lora_alpha)
    SFTTrainer(sft, policy, tokenizer, examples).train()
    return folder / "model"


def run_agent_rl(config: AgentRLConfig) -> TrainResult:
    """Load the policy (warm-started on demonstrations when asked, with a reference when --kl-coef > 0), build the
    environment, train with the one RL trainer, report."""
    set_seed(config.seed)
    suite = make_env_suite(config.env, invalid=config.invalid_action, invalid_penalty=config.invalid_penalty)
    model_path = starting_model(config, suite)
    if config.demonstrations:
        model_path = warm_start(config, suite, model_path)
    tokenizer = load_tokenizer(model_path)
    setup = prepare_run(config, tokenizer, model_path)
    # the trainer whose hooks the credit needs: a value head for a critic estimator (the registry says which)
    trainer_class = PPOTrainer if NEEDS_VALUES[config.advantage] else GRPOTrainer
    policy = load_causal_lm(model_path)
    if config.lora_rank and not config.demonstrations:
        policy = add_lora(policy, config.lora_rank, config.lora_alpha)
    policy = trainer_class.prepare_model(policy)
    reference = None
    if config.kl_coef and (config.ref_model is not None or not config.lora_rank):
        reference = load_causal_lm(config.ref_model or model_path)
    shaping = shaping_potential(config)
    trainer = trainer_class(config, policy, tokenizer, list(range(config.n_train_starts)), reference,
                            max_new_tokens=config.max_new_tokens,
                            rollouts=lambda t: EpisodeRollouts(t, suite, setup.chat, shaping))
    return trainer.train()


def register(add_command) -> None:
    def show(config: AgentRLConfig):
        result = run_agent_rl(config)
        report = json.loads((Path(config.out) / "report.json").read_text())
        before, after = report.get("before", {}), report.get("after", {})
        if before and after:
            print(f"held-out success {before['eval/success_rate']:.3f} -> {after['eval/success_rate']:.3f}, "
                  f"invalid-action rate {before['eval/invalid_rate']:.3f} -> {after['eval/invalid_rate']:.3f} "
                  f"({report['env_steps']} env steps, {result.seconds:.0f}s); report in {config.out}/report.json")
        print(f"model saved to {result.model_dir}")
        return result

    add_command("agent-rl", AgentRLConfig, show,
                "Multi-turn RL of a language model acting in a text environment (Gymnasium, BabyAI, text games, "
                "tools, single-turn tasks, OpenEnv), on the one RL trainer; warm start from an expert's or your "
                "demonstrations (--demonstrations); held-out success rate.")
