"""`tandem cai`: Constitutional AI (Bai et al. 2022b, "Constitutional AI: Harmlessness from AI Feedback").

SL-CAI: sample a response from the policy, critique it against a principle drawn from the constitution,
revise it, repeat for N rounds, then fine-tune the policy on the final revisions (SFT: next-token NLL on
the revision's tokens).

RL-CAI: sample two responses per prompt, ask a judge which one better follows each principle (both
orders averaged, optionally an ensemble over principles), keep the confident labels as preference
pairs, and optimise max E[r_const(x, y)] - beta KL(p_theta || p_ref) (RL-CAI), with r_const either a
reward model trained on them followed by PPO, or implicitly through DPO (whose beta is the KL weight).

The critic and reviser is a language model (`ModelReviser`: any local causal LM, the policy itself by
default, prompted in the paper's "Critique request: / Revision request:" format) or, for tests and
tiny models, `KeywordReviser`, which finds a principle's keywords and deletes the sentences holding them.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field

from tandem.ai_feedback.constitution import Constitution, Principle
from tandem.generation.engines import EngineOptions, RolloutEngine, as_engine, engine_for, make_engine
from tandem.judges import FunctionJudge, Judge, JudgeTemplate, build_judge, load_template, parse_judge_spec

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class Reviser(Protocol):
    """Writes a critique of each response under a principle, then a revision following the critique."""

    name: str

    def critique(self, prompts: list[str], responses: list[str], principles: list[Principle]) -> list[str]: ...

    def revise(self, prompts: list[str], responses: list[str], principles: list[Principle],
               critiques: list[str]) -> list[str]: ...


class KeywordReviser:
    """Rule-based critic and reviser: a principle's `keywords` find the problems; revising drops their sentences.

    A response whose every sentence breaks the principle is left as it is (there is nothing to keep).
    """

    name = "keywords"

    def critique(self, prompts: list[str], responses: list[str], principles: list[Principle]) -> list[str]:
        critiques = []
        for response, principle in zip(responses, principles, strict=True):
            found = principle.broken_by(response)
            critiques.append(f"The reply breaks '{principle.id}': it says {', '.join(repr(w) for w in found)}." if found
                             else f"No problem found under '{principle.id}'.")
        return critiques

    def revise(self, prompts: list[str], responses: list[str], principles: list[Principle],
               critiques: list[str]) -> list[str]:
        revisions = []
        for response, principle in zip(responses, principles, strict=True):
            sentences = _SENTENCE_END.split(response.strip())
            kept = [s for s in sentences if not principle.broken_by(s)]
            revisions.append(" " + " ".join(kept) if kept and len(kept) < len(sentences) else response)
        return revisions


class ModelReviser:
    """A causal LM critiques and revises, prompted as in Bai et al. (2022b), greedy by default.

        {prompt}{response}

        Critique request: {critique_request}
        Critique: <generated, up to the first blank line>

        Revision request: {revision_request}
        Revision: <generated, first line>

    An empty generated revision keeps the response unchanged. `engine` generates: a name (`hf`, `vllm`: made
    from `model`, a path or a loaded model) or an engine already made (the policy's, shared).
    """

    def __init__(self, model: Any, tokenizer: Any = None, max_new_tokens: int = 48, temperature: float = 0.0,
                 batch_size: int = 32, name: str = "model", engine: str | RolloutEngine = "hf") -> None:
        if isinstance(model, (str, Path)):
            name = f"local:{model}"
        elif tokenizer is None and isinstance(engine, str):
            raise ValueError("ModelReviser needs the model's tokenizer when given a model object")
        self.generator, self.name = as_engine(engine, model, tokenizer), name
        self.options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "batch_size": batch_size}

    @staticmethod
    def critique_text(prompt: str, response: str, principle: Principle) -> str:
        return f"{prompt}{response}\n\nCritique request: {principle.critique_request}\nCritique:"

    def critique(self, prompts: list[str], responses: list[str], principles: list[Principle]) -> list[str]:
        texts = [self.critique_text(*row) for row in zip(prompts, responses, principles, strict=True)]
        return [text.split("\n\n")[0].strip() for text in self.generator.sample(texts, **self.options).texts]

    def revise(self, prompts: list[str], responses: list[str], principles: list[Principle],
               critiques: list[str]) -> list[str]:
        texts = [self.critique_text(p, r, c) + f" {critique}\n\nRevision request: {c.revision_request}\nRevision:"
                 for p, r, c, critique in zip(prompts, responses, principles, critiques, strict=True)]
        generated = self.generator.sample(texts, **self.options).texts
        revisions = []
        for response, text in zip(responses, generated):
            line = text.strip().split("\n")[0].strip()
            revisions.append(" " + line if line else response)
        return revisions


def build_reviser(spec: str, policy=None, tokenizer=None, engine: str = "hf",
                  policy_engine: RolloutEngine | None = None) -> Reviser:
    """`keywords`, `policy` (the model being trained critiques itself: `policy_engine` when given, the engine that
    sampled its responses, else an `engine` made from `policy`) or `local:PATH` (another model, on `engine`)."""
    if spec == "keywords":
        return KeywordReviser()
    if spec == "policy":
        if policy is None and policy_engine is None:
            raise ValueError("reviser 'policy' needs the policy model")
        return ModelReviser(policy, tokenizer, name="policy", engine=policy_engine or engine)
    if spec.startswith("local:"):
        return ModelReviser(spec[len("local:"):], engine=engine)
    raise ValueError(f"unknown reviser {spec!r}; use keywords, policy or local:PATH")


def critique_revise(prompts: list[str], responses: list[str], constitution: Constitution, reviser: Reviser,
                    rounds: int = 1, seed: int = 0) -> list[dict]:
    """SL-CAI data: for each response, `rounds` of (critique under a random principle, revise).

    Each round draws one principle per sample (seeded). Returns one record per prompt:
    {"prompt", "initial", "steps": [{"principle", "critique", "revision"}, ...], "final"}.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    rng = random.Random(seed)
    current = list(responses)
    records: list[dict] = [{"prompt": p, "initial": r, "steps": []} for p, r in zip(prompts, responses, strict=True)]
    for _ in range(rounds):
        principles = [rng.choice(constitution.principles) for _ in prompts]
        critiques = reviser.critique(prompts, current, principles)
        revisions = reviser.revise(prompts, current, principles, critiques)
        for i, (principle, critique, revision) in enumerate(zip(principles, critiques, revisions, strict=True)):
            records[i]["steps"].append({"principle": principle.id, "critique": critique, "revision": revision})
            current[i] = revision
    for record, final in zip(records, current):
        record["final"] = final
    return records


# ----- RL-CAI: preference labels from the principles ----------------------------------------------


def principle_template(principle: Principle, base: str = "compare") -> JudgeTemplate:
    """The built-in compare template with the principle's comparison question as the instruction."""
    template = load_template(base, "compare")
    instruction = (f"{principle.question}\n\nPrompt: {{prompt}}\nResponse {{label_a}}: {{response_a}}\n"
                   f"Response {{label_b}}: {{response_b}}")
    return JudgeTemplate(**{**template.model_dump(), "instruction": instruction, "source": f"principle {principle.id}"})


def keyword_judge(principle: Principle) -> FunctionJudge:
    """A function judge for one principle: score 1 when none of its keywords appear, else 0 (0.5 without keywords)."""

    def score(prompts: list[str], responses: list[str]) -> list[float]:
        if not principle.keywords:
            return [0.5] * len(responses)
        return [0.0 if principle.broken_by(response) else 1.0 for response in responses]

    score.__qualname__ = f"keywords:{principle.id}"
    return FunctionJudge(score=score, name=f"keywords:{principle.id}")


_TEMPLATE_OPTIONS = {"template", "score_template", "compare_template"}


def principle_judges(constitution: Constitution, spec: str = "keywords", device: str | None = None,
                     engine: str | None = None) -> dict[str, Judge]:
    """One judge per principle, asking that principle's comparison question.

    `keywords`: `keyword_judge`s. `local:PATH[:options]` / `openai:URL:MODEL[:options]`: a model judge per
    principle (one loaded model shared) whose compare template holds the principle's question, read from
    the probabilities of "A" / "B" and asked in both orders. `python:MODULE:FUNCTION`: the same function judge
    for every principle. `engine`: the local judges' generation engine (their reasoning, with cot=true).
    """
    if spec == "keywords":
        return {p.id: keyword_judge(p) for p in constitution.principles}
    kind, arguments, options = parse_judge_spec(spec)
    if kind == "python":
        judge = build_judge(spec)
        return {p.id: judge for p in constitution.principles}
    options = {key: value for key, value in options.items() if key not in _TEMPLATE_OPTIONS}
    if kind == "local":
        from tandem.judges.local import LocalJudge
        from tandem.models.loading import load_causal_lm, load_tokenizer

        model, tokenizer = load_causal_lm(arguments["model"]), load_tokenizer(arguments["model"])
        if device is not None:
            options.setdefault("device", device)
        if engine is not None:  # one engine for every principle's judge (a vLLM one starts now, once)
            options["engine"] = engine_for(engine, model, tokenizer, arguments["model"])
        return {p.id: LocalJudge(model, tokenizer, compare_template=principle_template(p), name=f"{spec}#{p.id}",
                                 **options) for p in constitution.principles}
    from tandem.judges.remote import OpenAIJudge

    return {p.id: OpenAIJudge(**arguments, compare_template=principle_template(p), **options)
            for p in constitution.principles}


def constitutional_preferences(judges: dict[str, Judge], prompts: list[str], responses_a: list[str],
                               responses_b: list[str], principles_per_label: int = 0, seed: int = 0) -> list[float | None]:
    """P(a better) per pair, averaged over `principles_per_label` principles drawn per pair (0: all of them).

    Each judge asks in both orders (position-debiased); a pair none of whose principles gave a usable
    verdict gets None.
    """
    from tandem.preference_data.labels import ensemble_probabilities, verdict_probabilities

    ids = list(judges)
    k = len(ids) if principles_per_label <= 0 else min(principles_per_label, len(ids))
    rng = random.Random(seed)
    chosen = [set(rng.sample(ids, k)) for _ in prompts]
    members = []
    for principle_id in ids:
        rows = [i for i, picked in enumerate(chosen) if principle_id in picked]
        values: list[float | None] = [None] * len(prompts)
        if rows:
            labelled = verdict_probabilities(judges[principle_id], [prompts[i] for i in rows], [responses_a[i] for i in rows],
                                      [responses_b[i] for i in rows])
            for i, value in zip(rows, labelled):
                values[i] = value
        members.append(values)
    return ensemble_probabilities(members)


# ----- the command ----------------------------------------------------------------------------------

PRESETS: dict[str, dict] = {
    "smoke": {"base": "smoke", "n_revise": 256, "n_pairs": 192, "n_eval": 96,
              "sft": {"max_steps": 30, "batch_size": 16, "lr": 3e-4},
              "dpo": {"max_steps": 24, "batch_size": 16, "lr": 2e-4, "beta": 0.1},
              "rm": {"max_steps": 40, "batch_size": 16, "lr": 2e-4},
              "ppo": {"max_steps": 10, "batch_size": 16, "micro_batch_size": 16, "lr": 5e-5}},
    "default": {"base": "default", "n_revise": 1536, "n_pairs": 1024, "n_eval": 256,
                "sft": {"max_steps": 80, "batch_size": 32, "lr": 1e-4},
                "dpo": {"max_steps": 64, "batch_size": 32, "lr": 5e-5, "beta": 0.1},
                "rm": {"max_steps": 120, "batch_size": 32, "lr": 1e-4},
                "ppo": {"max_steps": 30, "batch_size": 32, "micro_batch_size": 32, "lr": 2e-5}},
}


class CAIConfig(EngineOptions):
    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("runs/cai"), description="Run directory: revisions, labels, models, report.json and report.md.")
    task: str = Field("polite", description="Built-in task: prompts, gold helpfulness and the rule-violation detector.")
    model: Path | None = Field(None, description="SFT policy to start from (default: pre-train and fine-tune one on --task).")
    preset: Literal["smoke", "default"] = Field("default", description="Sizes: smoke (about a minute) or default (minutes).")
    constitution: str = Field("polite", description="Constitution: a built-in name or a YAML file of principles.")
    stages: Literal["sl", "rl", "both"] = Field("both", description="SL-CAI (critique -> revise -> SFT), RL-CAI (AI labels -> r_const -> RL), or SL then RL.")
    reviser: str = Field("keywords", description="Critic and reviser of SL-CAI: keywords, policy (the model critiques itself) or local:PATH.")
    rounds: int = Field(2, ge=1, description="Critique-revision rounds per response.")
    judge: str = Field("keywords", description="RL-CAI labeller per principle: keywords, local:PATH, openai:URL:MODEL or python:MODULE:FUNCTION.")
    principles_per_label: int = Field(0, ge=0, description="Principles averaged per AI label (0: all, an ensemble).")
    min_confidence: float = Field(0.0, ge=0, lt=0.5, description="Keep AI labels with |P(a better) - 0.5| above this.")
    rl_algorithm: Literal["dpo", "ppo"] = Field("dpo", description="RL-CAI optimiser: dpo (beta = the KL weight) or ppo on a reward model r_const.")
    kl_coef: float = Field(0.05, ge=0, description="beta of the RL-CAI objective (the KL weight) for PPO.")
    seed: int = Field(0, description="Seed for every stage.")
    mixed_precision: Literal["auto", "bf16", "no"] = Field("auto", description="Autocast precision.")
    progress: bool = Field(True, description="Show progress bars.")


def run_sl_cai(config: CAIConfig, policy_dir: Path, constitution: Constitution, preset: dict) -> tuple[Path, dict]:
    """Sample, critique and revise `rounds` times, fine-tune on the final revisions; (model dir, stats)."""
    from tandem.ai_feedback.runs import outcome_metrics
    from tandem.files import write_jsonl
    from tandem.tasks import get_task
    from tandem.trainers.sft import SFTConfig, run_sft

    task = get_task(config.task)
    policy = make_engine(config.engine, policy_dir, memory=config.engine_memory)
    prompts = [row["prompt"] for row in task.sft_examples(preset["n_revise"], seed=config.seed + 2)]
    responses = policy.sample(prompts, max_new_tokens=task.max_new_tokens, temperature=1.0, seed=config.seed).texts
    reviser = build_reviser(config.reviser, engine=config.engine, policy_engine=policy)
    records = critique_revise(prompts, responses, constitution, reviser, config.rounds, config.seed)
    del policy, reviser  # their engines' memory back before fine-tuning
    write_jsonl(config.out / "sl_cai" / "revisions.jsonl", records)
    data = write_jsonl(config.out / "sl_cai" / "sft_data.jsonl",
                       [{"prompt": r["prompt"], "completion": r["final"]} for r in records if r["final"].strip()])
    stats = {"initial": outcome_metrics(task, prompts, responses),
             "revised": outcome_metrics(task, prompts, [r["final"] for r in records]),
             "changed": sum(r["final"] != r["initial"] for r in records) / len(records)}
    sft = SFTConfig(out=config.out / "sl_cai" / "sft", model=policy_dir, data=data, task=config.task, seed=config.seed,
                    mixed_precision=config.mixed_precision, progress=config.progress, **preset["sft"])
    return run_sft(sft).model_dir, stats


def run_rl_cai(config: CAIConfig, policy_dir: Path, constitution: Constitution, preset: dict) -> tuple[Path, dict]:
    """AI labels from the principles on policy samples -> DPO, or reward model r_const -> PPO; (model dir, stats)."""
    from tandem.preference_data.labels import label_agreement, preference_rows
    from tandem.preference_data.pairs import sample_pairs
    from tandem.files import write_jsonl
    from tandem.tasks import get_task
    from tandem.trainers.dpo import DPOConfig, run_dpo
    from tandem.trainers.ppo import PPOConfig, run_ppo
    from tandem.trainers.rm import RMConfig, run_rm

    task = get_task(config.task)
    policy = make_engine(config.engine, policy_dir, memory=config.engine_memory)
    prompts = [row["prompt"] for row in task.sft_examples(preset["n_pairs"], seed=config.seed + 3)]
    a, b = sample_pairs(None, policy.tokenizer, prompts, task.max_new_tokens, seed=config.seed + 11, engine=policy)
    del policy
    judges = principle_judges(constitution, config.judge, engine=config.engine)
    probabilities = constitutional_preferences(judges, prompts, a, b, config.principles_per_label, config.seed)
    rows = preference_rows(prompts, a, b, probabilities, config.min_confidence)
    labels = write_jsonl(config.out / "rl_cai" / "ai_preferences.jsonl", rows)
    violated_a, violated_b = (task.violations(prompts, a), task.violations(prompts, b)) if hasattr(task, "violations") else (None, None)
    stats = {"ai_label_agreement": label_agreement(probabilities, task.gold_reward(prompts, a), task.gold_reward(prompts, b)),
             "n_preference_rows": len(rows),
             "judges": {name: judge.stats.as_dict() for name, judge in judges.items()}}
    if violated_a is not None:  # agreement on the rules alone: pairs where exactly one response breaks one
        stats["rule_agreement"] = label_agreement(probabilities, [-float(v) for v in violated_a], [-float(v) for v in violated_b])
    common = {"seed": config.seed, "mixed_precision": config.mixed_precision, "progress": config.progress, "task": config.task}
    if config.rl_algorithm == "dpo":
        dpo = DPOConfig(out=config.out / "rl_cai" / "dpo", model=policy_dir, data=labels, eval_fraction=0.05, **common,
                        **preset["dpo"])
        return run_dpo(dpo).model_dir, stats
    rm = run_rm(RMConfig(out=config.out / "rl_cai" / "r_const", model=policy_dir, data=labels, eval_fraction=0.1,
                         **common, **preset["rm"]))
    stats["r_const_accuracy"] = rm.metrics.get("eval/accuracy")
    ppo = PPOConfig(out=config.out / "rl_cai" / "ppo", model=policy_dir, reward=f"model:{rm.model_dir}", n_eval=0,
                    kl_coef=config.kl_coef, engine=config.engine, **common, **preset["ppo"])
    return run_ppo(ppo).model_dir, stats


def run_cai(config: CAIConfig) -> dict:
    from tandem.ai_feedback.constitution import load_constitution
    from tandem.ai_feedback.runs import Stopwatch, base_models, measure_policy, write_report

    preset = PRESETS[config.preset]
    constitution = load_constitution(config.constitution)
    clock = Stopwatch()
    policy = config.model or base_models(config.out / "base", config.task, preset["base"], config.seed, config.progress,
                                         config.mixed_precision)[1]
    clock.lap("base_models")
    measured = {"sft": measure_policy(policy, config.task, preset["n_eval"], config.seed, engine=config.engine)}
    report: dict[str, Any] = {"command": "cai", "task": config.task, "preset": config.preset,
                              "constitution": constitution.name, "stages": config.stages}
    if config.stages in ("sl", "both"):
        policy, report["sl_cai"] = run_sl_cai(config, policy, constitution, preset)
        measured["sl_cai"] = measure_policy(policy, config.task, preset["n_eval"], config.seed, engine=config.engine)
        clock.lap("sl_cai")
    if config.stages in ("rl", "both"):
        policy, report["rl_cai"] = run_rl_cai(config, policy, constitution, preset)
        measured["rl_cai"] = measure_policy(policy, config.task, preset["n_eval"], config.seed, engine=config.engine)
        clock.lap("rl_cai")
    report.update({"policies": measured, "model": str(policy), "seconds": clock.seconds})
    tables = [("Held-out policy after each stage", [{"policy": name, **metrics} for name, metrics in measured.items()])]
    if "sl_cai" in report:
        tables.append(("SL-CAI training responses before and after critique-revision",
                       [{"responses": key, **report["sl_cai"][key]} for key in ("initial", "revised")]))
    if "rl_cai" in report:
        tables.append(("RL-CAI AI labels vs gold", [{"against": "gold reward", **report["rl_cai"]["ai_label_agreement"]}]
                       + ([{"against": "rule violations", **report["rl_cai"]["rule_agreement"]}]
                          if "rule_agreement" in report["rl_cai"] else [])))
    tables.append(("Seconds", [clock.seconds]))
    write_report(config.out, report, f"tandem cai: {constitution.name} on {config.task} ({config.preset})", tables)
    return report
