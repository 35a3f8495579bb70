"""`tandem rlaif`: reinforcement learning from AI feedback (Lee et al. 2023).

    max_theta E_{x, y ~ p_theta} [ r_{C_psi}(x, y) - beta log p_theta(y|x) / p_ref(y|x) ]

The critic C_psi is a judge (`tandem.judges`: a local model, an OpenAI-compatible endpoint, a Python
function, or the built-in `heuristic` judge). Two ways to use it:

- **direct**: the judge's score of each sampled completion (or P(completion better than a reference
  SFT sample), `--direct-reward compare`) is the reward inside PPO or GRPO; unusable verdicts drop the
  sample (None reward, counted) and never become a reward;
- **distilled**: the judge labels pairs sampled from the SFT policy (both orders averaged) -> preference
  JSONL -> a Bradley-Terry reward model -> PPO, or the pairs -> DPO.

Either way the report says how often the AI labels agree with the gold labels of the task.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field

from tandem.ai_feedback.constitution import Constitution, load_constitution
from tandem.ai_feedback.runs import RL_CONFIGS, Stopwatch, base_models, measure_policy, run_rl_with_reward, write_report
from tandem.files import write_jsonl
from tandem.generation.engines import EngineOptions, RolloutEngine, as_engine, make_engine
from tandem.judges import FunctionJudge, Judge, JudgeReward, build_judge
from tandem.models.loading import process_device
from tandem.preference_data.labels import label_agreement, preference_rows, verdict_probabilities
from tandem.preference_data.pairs import sample_pairs
from tandem.tasks import get_task
from tandem.trainers.dpo import DPOConfig, run_dpo
from tandem.trainers.loop import frozen_model_dtype
from tandem.trainers.ppo import PPOConfig, run_ppo
from tandem.trainers.rm import RMConfig, run_rm

_WORD = re.compile(r"[a-z0-9]+")
_ROLE_WORDS = frozenset({"customer", "assistant", "user", "prompt", "question", "answer"})


def relevance(prompt: str, response: str, min_letters: int = 4) -> float:
    """Share of the prompt's words of at least `min_letters` letters (role labels aside) that the response repeats."""
    asked = {w for w in _WORD.findall(prompt.lower()) if len(w) >= min_letters and w not in _ROLE_WORDS}
    if not asked:
        return 0.0
    said = set(_WORD.findall(response.lower()))
    return len(asked & said) / len(asked)


class HeuristicScore:
    """The built-in stand-in for an LLM judge: 0.5 * (share of keyword principles kept) + 0.5 * relevance.

    It knows only the constitution's keyword lists and how much of the question the reply takes up, not
    the task's gold scorer, so its labels agree with gold imperfectly (which the report measures).
    """

    def __init__(self, constitution: Constitution) -> None:
        self.principles = [p for p in constitution.principles if p.keywords]
        self.__qualname__ = f"heuristic:{constitution.name}"

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        scores = []
        for prompt, response in zip(prompts, responses, strict=True):
            kept = sum(not p.broken_by(response) for p in self.principles) / max(len(self.principles), 1)
            scores.append(0.5 * kept + 0.5 * relevance(prompt, response))
        return scores


def build_rlaif_judge(spec: str, constitution: str | Constitution = "polite", device: str | None = None,
                      engine: str | None = None, dtype=None) -> Judge:
    """`heuristic` (the built-in function judge for a constitution) or any judge spec (`local:`, `openai:`, `python:`);
    `engine` is a local judge's generation engine (its reasoning with cot=true)."""
    if spec == "heuristic":
        return FunctionJudge(score=HeuristicScore(load_constitution(constitution)), name="heuristic")
    judge = build_judge(spec, device=device, dtype=dtype)
    if engine is not None and hasattr(judge, "engine"):
        judge.engine = engine
    return judge


# ----- the command ----------------------------------------------------------------------------------

PRESETS: dict[str, dict] = {
    "smoke": {"n_pairs": 192, "n_eval": 96, "base": "smoke",
              "rm": {"max_steps": 40, "batch_size": 16, "lr": 2e-4},
              "dpo": {"max_steps": 24, "batch_size": 16, "lr": 2e-4, "beta": 0.1},
              "rl": {"max_steps": 12, "batch_size": 16, "micro_batch_size": 16, "lr": 1e-4}},
    "default": {"n_pairs": 1024, "n_eval": 256, "base": "default",
                "rm": {"max_steps": 120, "batch_size": 32, "lr": 1e-4},
                "dpo": {"max_steps": 64, "batch_size": 32, "lr": 5e-5, "beta": 0.1},
                "rl": {"max_steps": 30, "batch_size": 32, "micro_batch_size": 32, "lr": 2e-5}},
}


class RLAIFConfig(EngineOptions):
    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("runs/rlaif"), description="Run directory: labels, models, report.json and report.md.")
    task: str = Field("polite", description="Built-in task: prompts, and the gold reward the AI labels are checked against.")
    model: Path | None = Field(None, description="SFT policy to start from (default: pre-train and fine-tune one on --task).")
    preset: Literal["smoke", "default"] = Field("default", description="Sizes: smoke (about a minute) or default (minutes).")
    judge: str = Field("heuristic", description="The critic: heuristic (built-in function judge), local:PATH, openai:URL:MODEL or python:MODULE:FUNCTION.")
    constitution: str = Field("polite", description="Constitution the heuristic judge reads its rules from (name or YAML path).")
    mode: Literal["direct", "distilled"] = Field("direct", description="direct: judge score is the RL reward; distilled: AI labels -> reward model/DPO.")
    algorithm: Literal["grpo", "ppo", "dpo"] = Field("grpo", description="direct: grpo or ppo; distilled: ppo (reward model -> PPO) or dpo.")
    direct_reward: Literal["score", "compare"] = Field("score", description="direct: the judge's score, or P(completion better than an SFT sample).")
    n_pairs: int | None = Field(None, ge=8, description="Pairs sampled from the SFT policy and labelled by the judge (default: preset's).")
    min_confidence: float = Field(0.0, ge=0, lt=0.5, description="Keep AI labels with |P(a better) - 0.5| above this.")
    kl_coef: float = Field(0.05, ge=0, description="beta of the KL term, for PPO/GRPO (DPO uses the preset's beta).")
    rl_steps: int | None = Field(None, ge=1, description="RL or DPO steps (default: preset's).")
    n_eval: int | None = Field(None, ge=8, description="Held-out prompts for gold reward and violation rate (default: preset's).")
    seed: int = Field(0, description="Seed for every stage.")
    mixed_precision: Literal["auto", "bf16", "no"] = Field("auto", description="Autocast precision.")
    progress: bool = Field(True, description="Show progress bars.")


def label_policy_pairs(model_dir: Path, task_name: str, judge: Judge, n: int, seed: int,
                       engine: str | RolloutEngine = "hf") -> tuple[list[dict], dict]:
    """Two SFT samples per training prompt, AI labels (both orders), agreement with gold; (rows, stats).
    `engine`: a generation engine's name, or one made from `model_dir`."""
    task = get_task(task_name)
    policy = as_engine(engine, model_dir)
    prompts = [row["prompt"] for row in task.sft_examples(n, seed=seed + 1)]
    a, b = sample_pairs(None, policy.tokenizer, prompts, task.max_new_tokens, seed=seed, engine=policy)
    probabilities = verdict_probabilities(judge, prompts, a, b)
    agreement = label_agreement(probabilities, task.gold_reward(prompts, a), task.gold_reward(prompts, b))
    return preference_rows(prompts, a, b, probabilities), agreement


def run_rlaif(config: RLAIFConfig) -> dict:
    preset = PRESETS[config.preset]
    clock = Stopwatch()
    common = {"seed": config.seed, "mixed_precision": config.mixed_precision, "progress": config.progress}
    if config.mode == "direct" and config.algorithm == "dpo":
        raise ValueError("direct RLAIF runs PPO or GRPO with the judge as reward; use --mode distilled for DPO")
    sft = config.model or base_models(config.out / "base", config.task, preset["base"], **common)[1]
    clock.lap("base_models")
    n_eval = config.n_eval or preset["n_eval"]
    policy = make_engine(config.engine, sft, memory=config.engine_memory)  # one engine for every SFT sample (vLLM starts once)
    before = measure_policy(sft, config.task, n_eval, config.seed, engine=policy)
    judge = build_rlaif_judge(config.judge, config.constitution, engine=config.engine, device=process_device(),
                              dtype=frozen_model_dtype(config.mixed_precision))
    rows, agreement = label_policy_pairs(sft, config.task, judge, config.n_pairs or preset["n_pairs"], config.seed,
                                         engine=policy)
    labels = write_jsonl(config.out / "ai_preferences.jsonl", rows)
    clock.lap("ai_labels")
    steps = {"max_steps": config.rl_steps} if config.rl_steps else {}
    prompts = None
    if config.mode == "direct" and config.direct_reward == "compare":
        prompts = reference_prompts(sft, config.task, 4 * preset["rl"]["batch_size"] * preset["rl"]["max_steps"],
                                    config.seed, engine=policy)
    del policy  # its memory back before training (the RL trainer starts its own engine)
    rl_common = {**common, "task": config.task, "n_eval": 0, "kl_coef": config.kl_coef, "engine": config.engine}
    if config.mode == "direct":
        reward = JudgeReward(judge, reference="reference" if config.direct_reward == "compare" else None)
        config_class = RL_CONFIGS[config.algorithm]
        extra = {"samples_per_prompt": 4, "batch_size": preset["rl"]["batch_size"] // 4} if config.algorithm == "grpo" else {}
        rl = config_class(out=config.out / config.algorithm, model=sft, **rl_common,
                          **{**preset["rl"], **extra, **steps})
        final = run_rl_with_reward(rl, config.algorithm, reward, prompts).model_dir
    elif config.algorithm == "dpo":
        dpo = DPOConfig(out=config.out / "dpo", model=sft, data=labels, task=config.task, eval_fraction=0.05, **common,
                        **{**preset["dpo"], **steps})
        final = run_dpo(dpo).model_dir
    else:
        rm = run_rm(RMConfig(out=config.out / "rm", model=sft, data=labels, task=config.task, eval_fraction=0.1,
                             **common, **preset["rm"]))
        clock.lap("reward_model")
        ppo = PPOConfig(out=config.out / "ppo", model=sft, reward=f"model:{rm.model_dir}", **rl_common,
                        **{**preset["rl"], **steps})
        final = run_ppo(ppo).model_dir
    clock.lap("training")
    after = measure_policy(final, config.task, n_eval, config.seed, engine=config.engine)
    report = {"command": "rlaif", "task": config.task, "preset": config.preset, "mode": config.mode,
              "algorithm": config.algorithm, "judge": config.judge, "direct_reward": config.direct_reward,
              "ai_label_agreement": agreement, "n_preference_rows": len(rows), "judge_stats": judge.stats.as_dict(),
              "before": before, "after": after, "model": str(final), "seconds": clock.seconds}
    write_report(config.out, report, f"tandem rlaif: {config.mode} {config.algorithm} on {config.task} ({config.preset})", [
        ("AI labels vs gold labels", [agreement]),
        ("Held-out policy before and after", [{"policy": "SFT", **before}, {"policy": f"RLAIF {config.mode}", **after}]),
        ("Seconds", [clock.seconds]),
    ])
    return report


def reference_prompts(model_dir: Path, task_name: str, n: int, seed: int,
                      engine: str | RolloutEngine = "hf") -> list[dict]:
    """Training prompts each with a `reference` column: one SFT sample, what direct compare-RLAIF must beat."""
    task = get_task(task_name)
    prompts = [row["prompt"] for row in task.sft_examples(n, seed=seed)]
    texts = as_engine(engine, model_dir).sample(prompts, max_new_tokens=task.max_new_tokens, temperature=1.0,
                                                seed=seed + 7).texts
    return [{"prompt": p, "reference": t} for p, t in zip(prompts, texts)]
