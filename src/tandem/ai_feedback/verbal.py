"""`tandem verbal-reward`: a reward learned from verbal feedback, r = g_phi(s, a, s', f) (rewards from linguistic
feedback, Sumers et al. 2021).

For a language model the state s is the prompt, the action a the response (and s' = s + a), and f a
sentence of feedback on it ("Too rude: do not say 'stupid'.", "The answer is off by 3."). g_phi is a
causal-LM backbone with a scalar head (the reward-model layout of `tandem rm`) reading

    {prompt}{response}\\nFeedback: {feedback}<eos>

trained by regression on the score that came with the feedback. During RL (PPO or GRPO) a feedback
source (a person, an LLM critic, or here the task's own feedback writer) comments on each sampled
response and g_phi turns its comment into the reward.

The built-in tasks write feedback from their gold scorers (`FEEDBACK_WRITERS`), so the learned reward is
measured: correlation of g_phi with gold on held-out responses, and the gold reward RL gains with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import ConfigDict, Field
from transformers import set_seed

import tandem.tasks.polite  # noqa: F401  (registers the "polite" task)

from tandem.config import InputPath
from tandem.data import DataError, pad_sft_batch, read_records, tokenize_sft
from tandem.generation.engines import EngineOptions, make_engine
from tandem.models.loading import load_reward_model, load_tokenizer, save_model
from tandem.rewards.answers import extract_answer
from tandem.tasks import Task, get_task
from tandem.trainers.loop import LossOutput, Trainer, TrainResult

FeedbackWriter = Callable[[Task, str, str], str]
FEEDBACK_WRITERS: dict[str, FeedbackWriter] = {}


def register_feedback_writer(task_name: str) -> Callable[[FeedbackWriter], FeedbackWriter]:
    """Decorator: `writer(task, prompt, response) -> sentence` is the verbal feedback of task `task_name`."""

    def decorator(writer: FeedbackWriter) -> FeedbackWriter:
        FEEDBACK_WRITERS[task_name] = writer
        return writer

    return decorator


@register_feedback_writer("polite")
def polite_feedback(task, prompt: str, response: str) -> str:
    return task.feedback(prompt, response)


@register_feedback_writer("sentiment")
def sentiment_feedback(task, prompt: str, response: str) -> str:
    parts = task.gold_components(response)
    notes = []
    if parts["repetition_penalty"] > 0:
        notes.append("Too repetitive.")
    if parts["length_penalty"] > 0:
        notes.append("Too long.")
    sentiment = parts["sentiment"]
    if sentiment <= -0.4:
        notes.append("Too negative: the review should praise the film.")
    elif sentiment < 0.4:
        notes.append("Too neutral: say what was good about the film.")
    elif sentiment < 0.9:
        notes.append("Positive, but it could be warmer.")
    elif not notes:
        notes.append("Very positive and natural.")
    return " ".join(notes)


@register_feedback_writer("arithmetic")
def arithmetic_feedback(task, prompt: str, response: str) -> str:
    from tandem.tasks.arithmetic import answer_from_prompt

    answer = extract_answer(response)
    if answer is None:
        return "There is no final answer."
    error = answer - answer_from_prompt(prompt)
    return "Correct." if error == 0 else f"The answer is off by {abs(error):g}."


def write_feedback(task_name: str, prompts: list[str], responses: list[str]) -> list[str]:
    """The task's verbal feedback on each response."""
    if task_name.split(":")[0] not in FEEDBACK_WRITERS:
        raise ValueError(f"task {task_name!r} writes no verbal feedback; tasks that do: {', '.join(sorted(FEEDBACK_WRITERS))}")
    task, writer = get_task(task_name), FEEDBACK_WRITERS[task_name.split(":")[0]]
    return [writer(task, p, r) for p, r in zip(prompts, responses, strict=True)]


def feedback_examples(task_name: str, n_pairs: int, seed: int = 0, held_out: bool = False) -> list[dict]:
    """{"prompt", "response", "feedback", "score"} rows from both sides of the task's candidate pairs (score = gold)."""
    task = get_task(task_name)
    prompts, responses = [], []
    for pair in task.preference_pairs(n_pairs, seed=seed, held_out=held_out):
        prompts += [pair["prompt"], pair["prompt"]]
        responses += [pair["chosen"], pair["rejected"]]
    return feedback_rows(task_name, prompts, responses)


def feedback_rows(task_name: str, prompts: list[str], responses: list[str]) -> list[dict]:
    """Rows for responses of any origin (e.g. policy samples), with the task's feedback and gold score."""
    feedback = write_feedback(task_name, prompts, responses)
    gold = get_task(task_name).gold_reward(prompts, responses)
    return [{"prompt": p, "response": r, "feedback": f, "score": s} for p, r, f, s in zip(prompts, responses, feedback, gold)]


def read_feedback_file(path: Path) -> list[dict]:
    """A user's feedback data: records with string `prompt`, `response`, `feedback` and a number `score`."""
    rows = []
    for record in read_records(path):
        for field in ("prompt", "response", "feedback"):
            if not isinstance(record.data.get(field), str):
                raise record.error(f"expected a string, got {type(record.data.get(field)).__name__}", field=field)
        score = record.data.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise record.error(f"expected a finite number, got {score!r}", field="score")
        rows.append({key: record.data[key] for key in ("prompt", "response", "feedback")} | {"score": float(score)})
    if not rows:
        raise DataError("no feedback records", path=str(path))
    return rows


# ----- g_phi ----------------------------------------------------------------------------------------


def feedback_text(prompt: str, response: str) -> str:
    """What g_phi reads before the feedback sentence."""
    return f"{prompt}{response}\nFeedback:"


def tokenize_feedback(row: dict, tokenizer, max_length: int | None = None) -> dict:
    example = tokenize_sft({"prompt": feedback_text(row["prompt"], row["response"]), "completion": " " + row["feedback"]},
                           tokenizer, max_length)
    return {**example, "score": float(row["score"])}


class FeedbackRewardTrainer(Trainer):
    """Regression of g_phi(prompt, response, feedback) on the score: loss = sum (g_phi - score)^2 / rows."""

    name = "g_phi"

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_sft_batch(examples, self.tokenizer.pad_token_id)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "score": torch.tensor([e["score"] for e in examples])}

    def compute_loss(self, model, batch) -> LossOutput:
        predicted = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        error = predicted.squeeze(-1).float() - batch["score"]
        return LossOutput((error**2).sum(), {"abs_error": float(error.detach().abs().sum())})

    def save_final(self, model, folder: Path) -> None:
        save_model(model, self.tokenizer, folder)


def train_feedback_reward(config, backbone: Path, train_rows: list[dict], eval_rows: list[dict]) -> TrainResult:
    """Fit g_phi on `train_rows` from the causal LM `backbone` (a fresh scalar head); `config` is a `TrainConfig`."""
    set_seed(config.seed)
    tokenizer = load_tokenizer(backbone)
    model = load_reward_model(backbone)
    train = [tokenize_feedback(row, tokenizer, config.max_length) for row in train_rows]
    held_out = [tokenize_feedback(row, tokenizer, config.max_length) for row in eval_rows]
    return FeedbackRewardTrainer(config, model, tokenizer, train, held_out).train()


class VerbalFeedbackReward:
    """r = g_phi(s, a, s', f): a feedback source comments on each response, g_phi maps the comment to a scalar.

    Args:
        model: g_phi's directory (written by `train_feedback_reward`).
        feedback: `feedback(prompts, responses) -> sentences`; by default the task's feedback writer.
        task: the built-in task whose writer to use when `feedback` is None.
        batch_size: rows per forward pass.
    """

    def __init__(self, model: Path, feedback: Callable[[list[str], list[str]], list[str]] | None = None,
                 task: str | None = None, batch_size: int = 32) -> None:
        if feedback is None:
            if task is None:
                raise ValueError("VerbalFeedbackReward needs a feedback function or a task that writes feedback")
            feedback = lambda prompts, responses: write_feedback(task, prompts, responses)  # noqa: E731
        self.feedback, self.batch_size, self.name = feedback, batch_size, f"verbal:{model}"
        self.tokenizer, self.model = load_tokenizer(model), load_reward_model(model).eval()

    @torch.no_grad()
    def predict(self, rows: list[dict]) -> list[float]:
        """g_phi of rows {"prompt", "response", "feedback"}."""
        scores: list[float] = []
        for start in range(0, len(rows), self.batch_size):
            chunk = [tokenize_feedback({**row, "score": 0.0}, self.tokenizer) for row in rows[start : start + self.batch_size]]
            batch = pad_sft_batch(chunk, self.tokenizer.pad_token_id)
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
            scores.extend(logits.squeeze(-1).float().tolist())
        return scores

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float]:
        sentences = columns.get("feedback") or self.feedback(prompts, completions)
        return self.predict([{"prompt": p, "response": c, "feedback": f} for p, c, f in zip(prompts, completions, sentences)])


# ----- correlation ----------------------------------------------------------------------------------


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation sum((x - mean x)(y - mean y)) / sqrt(sum (x - mean x)^2 sum (y - mean y)^2); NaN if constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two equally long sequences of at least 2 values, got {len(x)} and {len(y)}")
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            result[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson correlation of the (tie-averaged) ranks."""
    return pearson(ranks(x), ranks(y))


# ----- the command ----------------------------------------------------------------------------------

PRESETS: dict[str, dict] = {
    "smoke": {"base": "smoke", "n_pairs": 256, "n_policy": 96, "n_held_out": 96, "n_eval": 96,
              "g_phi": {"max_steps": 40, "batch_size": 16, "lr": 3e-4},
              "rl": {"max_steps": 6, "batch_size": 4, "samples_per_prompt": 4, "micro_batch_size": 16, "lr": 5e-5, "log_every": 1}},
    "default": {"base": "default", "n_pairs": 1500, "n_policy": 500, "n_held_out": 400, "n_eval": 256,
                "g_phi": {"max_steps": 200, "batch_size": 32, "lr": 1e-4},
                "rl": {"max_steps": 30, "batch_size": 8, "samples_per_prompt": 4, "micro_batch_size": 32, "lr": 2e-5, "log_every": 1}},
}


class VerbalRewardConfig(EngineOptions):
    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("runs/verbal_reward"), description="Run directory: feedback data, g_phi, the RL policy, report.")
    task: str = Field("polite", description="Built-in task that writes verbal feedback (polite, sentiment, arithmetic).")
    model: Path | None = Field(None, description="SFT policy (and g_phi's backbone) to start from (default: pre-train and fine-tune one).")
    data: InputPath | None = Field(None, description="Your feedback data to train g_phi: records with prompt, response, feedback, score.")
    preset: Literal["smoke", "default"] = Field("default", description="Sizes: smoke (about a minute) or default (minutes).")
    algorithm: Literal["grpo", "ppo"] = Field("grpo", description="RL algorithm optimising the g_phi reward.")
    kl_coef: float = Field(0.05, ge=0, description="Weight of the KL to the SFT policy.")
    rl_steps: int | None = Field(None, ge=0, description="RL steps (default: preset's; 0: train and measure g_phi only).")
    seed: int = Field(0, description="Seed for every stage.")
    mixed_precision: Literal["auto", "bf16", "no"] = Field("auto", description="Autocast precision.")
    progress: bool = Field(True, description="Show progress bars.")


def run_verbal_reward(config: VerbalRewardConfig) -> dict:
    from tandem.config import TrainConfig
    from tandem.ai_feedback.runs import (RL_CONFIGS, Stopwatch, base_models, measure_policy, run_rl_with_reward,
                                         write_report)
    from tandem.files import write_jsonl

    preset, clock = PRESETS[config.preset], Stopwatch()
    write_feedback(config.task, [], [])  # fails early for a task without a feedback writer
    common = {"seed": config.seed, "mixed_precision": config.mixed_precision, "progress": config.progress}
    sft = config.model or base_models(config.out / "base", config.task, preset["base"], **common)[1]
    clock.lap("base_models")
    # g_phi learns from the task's candidate responses and from the SFT policy's own (what RL will score)
    task = get_task(config.task)
    prompts = [row["prompt"] for row in task.sft_examples(preset["n_policy"], seed=config.seed + 5)]
    policy = make_engine(config.engine, sft, memory=config.engine_memory)  # one engine for every SFT sample (vLLM starts once)
    policy_responses = policy.sample(prompts, max_new_tokens=task.max_new_tokens, temperature=1.0, seed=config.seed).texts
    if config.data is not None:
        train_rows = read_feedback_file(config.data)
    else:
        train_rows = feedback_examples(config.task, preset["n_pairs"], config.seed)
        train_rows += feedback_rows(config.task, prompts, policy_responses)
    held_out = feedback_examples(config.task, preset["n_held_out"], config.seed + 1, held_out=True)
    eval_prompts = [row["prompt"] for row in task.eval_prompts(preset["n_held_out"], seed=config.seed)]
    eval_responses = policy.sample(eval_prompts, max_new_tokens=task.max_new_tokens, temperature=1.0,
                                   seed=config.seed + 3).texts
    held_out += feedback_rows(config.task, eval_prompts, eval_responses)
    write_jsonl(config.out / "feedback_train.jsonl", train_rows)
    write_jsonl(config.out / "feedback_held_out.jsonl", held_out)
    clock.lap("feedback_data")
    g_config = TrainConfig(out=config.out / "g_phi", max_length=192, **common, **preset["g_phi"])
    g_phi = train_feedback_reward(g_config, sft, train_rows, held_out[: max(len(held_out) // 4, 1)]).model_dir
    reward = VerbalFeedbackReward(g_phi, task=config.task)
    predicted = reward.predict(held_out)
    gold = [row["score"] for row in held_out]
    quality = {"pearson": pearson(predicted, gold), "spearman": spearman(predicted, gold), "n_held_out": len(held_out)}
    clock.lap("g_phi")
    before = measure_policy(sft, config.task, preset["n_eval"], config.seed, engine=policy)
    del policy  # vLLM's copy of the SFT weights: the RL run makes its own engine
    report = {"command": "verbal-reward", "task": config.task, "preset": config.preset, "g_phi": str(g_phi),
              "g_phi_vs_gold": quality, "before": before}
    steps = preset["rl"]["max_steps"] if config.rl_steps is None else config.rl_steps
    rows = [{"policy": "SFT", **before}]
    if steps:
        config_class = RL_CONFIGS[config.algorithm]
        settings = {**preset["rl"], "max_steps": steps}
        if config.algorithm == "ppo":
            settings.update(batch_size=settings["batch_size"] * settings.pop("samples_per_prompt"))
        rl = config_class(out=config.out / config.algorithm, model=sft, task=config.task, n_eval=0, kl_coef=config.kl_coef,
                          engine=config.engine, **common, **settings)
        final = run_rl_with_reward(rl, config.algorithm, reward).model_dir
        report["after"] = measure_policy(final, config.task, preset["n_eval"], config.seed, engine=config.engine)
        report["gold_gain"] = report["after"]["gold_reward"] - before["gold_reward"]
        report["model"] = str(final)
        rows.append({"policy": f"{config.algorithm} on g_phi", **report["after"]})
        clock.lap("rl")
    report["seconds"] = clock.seconds
    write_report(config.out, report, f"tandem verbal-reward: {config.task} ({config.preset})", [
        ("g_phi vs gold on held-out responses", [quality]), ("Held-out policy", rows), ("Seconds", [clock.seconds])])
    return report
