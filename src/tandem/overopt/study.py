"""`tandem overopt`: reward-model over-optimisation (Gao, Schulman & Hilton 2022) in miniature, with mitigations.

On a built-in task with a gold scorer (default: `sentiment`, whose gold reward penalises the repetition
and rambling a learned reward never saw):

1. policy: an SFT model (given with --sft, or pre-trained and fine-tuned here with the quickstart's stages);
2. proxies: `n_proxies` reward models on the SFT backbone, each trained by `tandem rm` on only `n_labels`
   gold-labelled preference pairs, differing in seed (and in labels with --member-labels separate);
   each is standardised on samples of the SFT policy, so ensembles and clipping compare like with like;
3. best-of-n: a pool of samples per held-out prompt from the SFT policy; gold and proxy of the
   proxy-selected best of n (unbiased estimator) for n = 1, 2, 4, ..., with KL = log n - (n-1)/n;
4. RL: PPO from the SFT policy against the proxy with no KL penalty, pushed to large KL, evaluated
   every `eval_every` steps (gold, proxy, `sequence_kl`), with the reward-hacking monitor in the loop;
5. mitigations on the same setup: KL penalties, ensembles (mean, worst case, mean - lambda var;
   Coste et al. 2023) for best-of-n selection and for PPO, and a clipped proxy for PPO;
6. fits of R_bon(d) = d(alpha - beta d) and R_rl(d) = d(alpha - beta log d), d = sqrt(KL), to the gold
   gain over the SFT policy, the peak gold reward and the d where it occurs for every run.

Writes `report.json`, `report.md`, `overopt.png` and `mitigations.png` to --out.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from statistics import fmean
from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field, field_validator
from tqdm.auto import tqdm

from tandem.generation.engines import EngineOptions, make_engine
from tandem.models.loading import load_causal_lm, load_tokenizer
from tandem.rewards.ensemble import COMBINERS, ClippedReward, EnsembleReward, combine_scores
from tandem.overopt.fits import best_of_n_estimate, fit_gao, kl_best_of_n
from tandem.diagnostics.monitor import RewardHackingMonitor
from tandem.overopt.ppo_run import evaluate_policy, run_monitored_ppo
from tandem.overopt.report import plot_study, write_report
from tandem.rewards import RewardModelScorer
from tandem.tasks import get_task
from tandem.files import atomic_write_text, write_jsonl
from tandem.trainers.ppo import PPOConfig
from tandem.trainers.rm import RMConfig, run_rm

# Sizes per preset; a config field left at None takes its preset's value. "policy" names the quickstart preset
# whose pretrain and SFT stages make the policy when --sft is not given (smoke: the ~1M-parameter model).
OVEROPT_PRESETS: dict[str, dict] = {
    "default": {
        "policy": "smoke", "n_labels": 200, "n_proxies": 3, "rm_steps": 40, "bon_prompts": 64, "bon_max_n": 64,
        "n_eval": 128, "ppo_steps": 80, "eval_every": 8, "ppo_batch_size": 32, "ppo_lr": 1e-4, "kl_coefs": [0.05, 0.2],
        "combiners": ["mean", "worst_case", "uncertainty_weighted"],
    },
    "smoke": {
        "policy": "smoke", "n_labels": 96, "n_proxies": 2, "rm_steps": 12, "bon_prompts": 12, "bon_max_n": 16, "n_eval": 32,
        "ppo_steps": 6, "eval_every": 3, "ppo_batch_size": 16, "ppo_lr": 5e-5, "kl_coefs": [0.1],
        "combiners": ["worst_case"],
    },
}


class OveroptConfig(EngineOptions):
    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("runs/overopt"), description="Study directory: models, report.json, report.md and figures.")
    task: str = Field("sentiment", description="Built-in task with a gold reward.")
    preset: Literal["default", "smoke"] = Field("default", description="Study size: default (the measurement) or smoke (CI).")
    sft: Path | None = Field(None, description="SFT policy to start from (default: pre-train and fine-tune the tiny model of the smoke quickstart).")
    seed: int = Field(0, description="Seed of every stage; proxy k uses seed + k.")
    n_labels: int | None = Field(None, ge=8, description="Gold-labelled preference pairs each proxy reward model is trained on.")
    n_proxies: int | None = Field(None, ge=1, description="Proxy reward models (the ensemble); the first is the single proxy.")
    member_labels: Literal["shared", "separate"] = Field("shared", description="Ensemble members train on the same labels (seeds differ) or each on its own.")
    rm_steps: int | None = Field(None, ge=1, description="Optimizer steps of each proxy reward model (batch 16).")
    bon_prompts: int | None = Field(None, ge=1, description="Held-out prompts in the best-of-n pool.")
    bon_max_n: int | None = Field(None, ge=4, description="Largest n of best-of-n (n = 1, 2, 4, ..., rounded down to a power of two); also the pool size per prompt.")
    n_eval: int | None = Field(None, ge=1, description="Held-out prompts of each PPO evaluation.")
    ppo_steps: int | None = Field(None, ge=1, description="PPO rollout steps of every run.")
    eval_every: int | None = Field(None, ge=1, description="PPO steps between evaluations of gold, proxy and KL.")
    ppo_batch_size: int | None = Field(None, ge=1, description="Prompts per PPO rollout.")
    ppo_lr: float | None = Field(None, gt=0, description="PPO learning rate.")
    kl_coefs: list[float] | None = Field(None, description="KL-penalty coefficients of the mitigation runs (the base run has 0).")
    combiners: list[str] | None = Field(None, description="Ensemble combiners to measure: mean, worst_case, uncertainty_weighted.")
    ensemble_lambda: float = Field(0.5, ge=0, description="lambda of mean - lambda * variance.")
    clip_quantile: float | None = Field(0.9, gt=0, lt=1, description="Clip the proxy at this quantile of its scores on SFT samples (none: no clipping run).")
    mixed_precision: Literal["auto", "bf16", "no"] = Field("auto", description="Autocast precision of training.")
    progress: bool = Field(True, description="Show progress bars.")
    resume: bool = Field(False, description="Reuse the finished stages (models, runs) found in --out.")

    @field_validator("combiners")
    @classmethod
    def _known_combiners(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - set(COMBINERS))
        if unknown:
            raise ValueError(f"unknown ensemble combiner(s) {unknown}; known: {', '.join(sorted(COMBINERS))}")
        return value

    @field_validator("kl_coefs")
    @classmethod
    def _non_negative(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(c < 0 for c in value):
            raise ValueError(f"KL coefficients must be non-negative, got {value}")
        return value

    def setting(self, name: str):
        value = getattr(self, name)
        return OVEROPT_PRESETS[self.preset][name] if value is None else value


def _finished(folder: Path) -> bool:
    return (folder / "config.json").exists()


# ---- stages ---------------------------------------------------------------------------------------------------
def policy_stage(config: OveroptConfig) -> Path:
    """The SFT model: the given one, or pretrain -> SFT with the quickstart stages the preset names."""
    if config.sft is not None:
        if not _finished(config.sft):
            raise FileNotFoundError(f"--sft {config.sft} is not a model directory (no config.json)")
        return config.sft
    from tandem.presets import PRESETS
    from tandem.trainers.sft import pretrain_then_sft

    return pretrain_then_sft(config.out, PRESETS[OVEROPT_PRESETS[config.preset]["policy"]], reuse=config.resume,
                             seed=config.seed, task=config.task, progress=config.progress,
                             mixed_precision=config.mixed_precision)[1]


def proxy_stage(config: OveroptConfig, sft: Path, task) -> list[dict]:
    """Train the proxy reward models on few gold labels; return each one's directory and held-out accuracy."""
    n_labels, held_out = config.setting("n_labels"), config.out / "labels" / "held_out.jsonl"
    write_jsonl(held_out, task.preference_pairs(256, seed=config.seed + 10_000, held_out=True))
    proxies = []
    for k in range(config.setting("n_proxies")):
        label_seed = config.seed + (k if config.member_labels == "separate" else 0)
        labels = write_jsonl(config.out / "labels" / f"proxy-{k}.jsonl", task.preference_pairs(n_labels, seed=label_seed))
        folder = config.out / "rm" / f"proxy-{k}"
        if config.resume and _finished(folder / "model"):
            accuracy = json.loads((folder / "result.json").read_text())["accuracy"]
        else:
            result = run_rm(RMConfig(
                out=folder, model=sft, data=labels, eval_data=held_out, seed=config.seed + k, task=config.task,
                max_steps=config.setting("rm_steps"), batch_size=16, micro_batch_size=16, lr=2e-4,
                mixed_precision=config.mixed_precision, progress=config.progress, log_every=10,
            ))
            accuracy = result.metrics.get("eval/accuracy", float("nan"))
            atomic_write_text(folder / "result.json", json.dumps({"accuracy": accuracy}))
        proxies.append({"name": f"proxy-{k}", "model": str(folder / "model"), "labels": n_labels,
                        "label_seed": label_seed, "heldout_accuracy": accuracy})
    return proxies


def sample_pool(sft: Path, task, prompts: list[str], pool: int, seed: int, progress: bool,
                engine: str = "hf") -> list[list[str]]:
    """`pool` samples of the SFT policy (temperature 1) for each prompt, on the `engine` made from `sft`."""
    policy = make_engine(engine, sft)
    texts = []
    for i, prompt in enumerate(tqdm(prompts, desc="best-of-n pool", disable=not progress)):
        texts.append(policy.sample([prompt] * pool, max_new_tokens=task.max_new_tokens, temperature=1.0,
                                   seed=seed + i, batch_size=pool).texts)
    return texts


def best_of_n_curves(selectors: dict[str, np.ndarray], gold: np.ndarray, ns: list[int]) -> dict[str, dict]:
    """For each selector (P, N) array: gold and selector score of the selected best of n, averaged over prompts."""
    curves = {}
    for name, scores in selectors.items():
        points = []
        for n in ns:
            kl = kl_best_of_n(n)
            points.append({
                "n": n, "kl": kl, "d": math.sqrt(kl),
                "gold": fmean(best_of_n_estimate(s, g, n) for s, g in zip(scores, gold)),
                "proxy": fmean(best_of_n_estimate(s, s, n) for s in scores),
            })
        curves[name] = summarise_curve(points, "bon")
    return curves


def summarise_curve(points: list[dict], form: str) -> dict:
    """Observed peak of the gold reward, the fit of the gold gain over d = 0, and the final point."""
    gold0 = points[0]["gold"]
    peak = max(points, key=lambda p: p["gold"])
    try:
        fit = fit_gao([p["d"] for p in points], [p["gold"] - gold0 for p in points], form).to_dict()
    except ValueError as error:  # e.g. a run whose KL never left zero
        fit = {"error": str(error)}
    return {"points": points, "gold_at_0": gold0, "peak_gold": peak["gold"], "peak_d": peak["d"],
            "final_gold": points[-1]["gold"], "final_d": points[-1]["d"], "fit": fit}


def ppo_variants(config: OveroptConfig) -> list[dict]:
    """The base run (single proxy, no KL penalty) and one run per mitigation."""
    variants = [{"name": "proxy", "reward": "proxy", "kl_coef": 0.0}]
    variants += [{"name": f"kl-{c:g}", "reward": "proxy", "kl_coef": c} for c in config.setting("kl_coefs")]
    if config.setting("n_proxies") > 1:
        variants += [{"name": f"ensemble-{c}", "reward": c, "kl_coef": 0.0} for c in config.setting("combiners")]
    if config.clip_quantile is not None:
        variants.append({"name": f"clip-q{config.clip_quantile:g}", "reward": "clip", "kl_coef": 0.0})
    return variants


def ppo_stage(config: OveroptConfig, sft: Path, task, rewards: dict, progress_note=print) -> dict[str, dict]:
    """One PPO run per variant; each curve starts at the SFT policy (d = 0) and adds every evaluation."""
    eval_rows = task.eval_prompts(config.setting("n_eval"), seed=config.seed)
    prompts = [row["prompt"] for row in eval_rows]
    policy, tokenizer = load_causal_lm(sft), load_tokenizer(sft)
    steps = config.setting("ppo_steps")
    batch = config.setting("ppo_batch_size")
    curves = {}
    for variant in ppo_variants(config):
        reward = rewards[variant["reward"]]
        folder = config.out / "ppo" / variant["name"]
        progress_note(f"\n=== PPO: {variant['name']} (KL coefficient {variant['kl_coef']:g}, reward {reward.name}) ===")
        monitor = RewardHackingMonitor(out=folder / "monitor")
        started = time.perf_counter()
        if not (config.resume and _finished(folder / "model")):
            ppo = PPOConfig(
                out=folder, model=sft, task=config.task, reward=f"overopt:{variant['name']}", seed=config.seed,
                max_steps=steps, batch_size=batch, micro_batch_size=batch, update_epochs=2, minibatches=2,
                lr=config.setting("ppo_lr"), kl_coef=variant["kl_coef"], eval_every=config.setting("eval_every"),
                n_prompts=max(2000, steps * batch), n_eval=len(eval_rows), log_every=1,
                mixed_precision=config.mixed_precision, progress=config.progress, engine=config.engine,
            )
            run_monitored_ppo(ppo, reward, task, eval_rows, monitor)
        start = evaluate_policy(policy, tokenizer, task, prompts, reward, reference=policy, seed=config.seed)
        points = [{"step": 0, "kl": 0.0, "d": 0.0, "gold": start["gold"], "proxy": start["proxy"]}]
        for record in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()):
            if "eval/gold_reward" in record:
                kl = record["eval/kl_to_reference"]
                points.append({"step": record["step"], "kl": kl, "d": math.sqrt(max(kl, 0.0)),
                               "gold": record["eval/gold_reward"], "proxy": record["eval/proxy_reward"]})
        curve = summarise_curve(points, "rl")
        monitor_file = folder / "monitor" / "monitor.json"
        curve.update(variant, reward_name=reward.name, seconds=time.perf_counter() - started,
                     monitor=json.loads(monitor_file.read_text())["summary"] if monitor_file.exists() else None)
        curves[variant["name"]] = curve
    return curves


# ---- the study --------------------------------------------------------------------------------------------------
def run_overopt(config: OveroptConfig) -> dict:
    task = get_task(config.task)
    config.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    sft = policy_stage(config)
    lap("policy")
    proxies = proxy_stage(config, sft, task)
    lap("proxies")

    # Best-of-n pool: P held-out prompts x N samples, scored by every proxy and by the gold reward.
    ns = [2**i for i in range(int(math.log2(config.setting("bon_max_n"))) + 1)]
    pool = ns[-1]
    prompts = [row["prompt"] for row in task.eval_prompts(config.setting("bon_prompts"), seed=config.seed)]
    texts = sample_pool(sft, task, prompts, pool, config.seed, config.progress, config.engine)
    flat_prompts = [p for p in prompts for _ in range(pool)]
    flat_texts = [t for group in texts for t in group]
    tokenizer = load_tokenizer(sft)
    scorers = [RewardModelScorer(p["model"], tokenizer=tokenizer, batch_size=64, name=p["name"]) for p in proxies]
    ensemble = EnsembleReward(scorers, combine="mean")
    raw = ensemble.member_scores(flat_prompts, flat_texts)
    offsets, scales = raw.mean(axis=1), raw.std(axis=1)
    standard = (raw - offsets[:, None]) / scales[:, None]
    gold = np.array(task.gold_reward(flat_prompts, flat_texts)).reshape(len(prompts), pool)

    # Reward sources, each standardised on these SFT samples.
    def standardised(members, combine, **options):
        source = EnsembleReward([scorers[k] for k in members], combine=combine, **options)
        source.set_normalisation(offsets[members], scales[members])
        return source

    lam = config.ensemble_lambda
    options = {"uncertainty_weighted": {"lam": lam}}
    all_members = list(range(len(scorers)))
    rewards = {"proxy": standardised([0], "mean", name="proxy-0")}
    rewards.update({c: standardised(all_members, c, **options.get(c, {})) for c in config.setting("combiners")})
    clip_high = None
    if config.clip_quantile is not None:
        clip_high = float(np.quantile(standard[0], config.clip_quantile))
        rewards["clip"] = ClippedReward(rewards["proxy"], high=clip_high, name=f"clip[<={clip_high:.2f}](proxy-0)")

    selectors = {"proxy": standard[0].reshape(len(prompts), pool)}
    if len(scorers) > 1:
        selectors.update({f"ensemble-{c}": combine_scores(c, standard, **options.get(c, {})).reshape(len(prompts), pool)
                          for c in config.setting("combiners")})
    selectors["oracle (gold)"] = gold
    bon = best_of_n_curves(selectors, gold, ns)
    member_spread = float(np.mean(np.std(standard, axis=0))) if len(scorers) > 1 else 0.0
    lap("best_of_n")

    ppo = ppo_stage(config, sft, task, rewards)
    lap("ppo")

    report = {
        "task": config.task, "preset": config.preset, "sft": str(sft), "config": config.model_dump(mode="json"),
        "proxies": proxies, "ensemble_member_spread": member_spread, "clip_high": clip_high,
        "bon": bon, "ppo": ppo, "timings": timings,
    }
    report["figures"] = [str(p) for p in plot_study(report, config.out)]
    lap("report")
    report["timings"]["total"] = sum(timings.values())
    write_report(config.out, report)
    return report
