"""The LM world model (seed eq. 9): text format, malformed output, data split, the Gymnasium face, and learning."""

import json

import gymnasium as gym
import pytest
import torch

from tandem.lm_inside_agents.planning import EnvModel, plan_episode
from tandem.lm_inside_agents.render import action_names, render_state
from tandem.lm_inside_agents.world_model import (
    LMWorldModel,
    Prediction,
    TextTransition,
    WorldModelEnv,
    WorldModelTrainConfig,
    collect_transitions,
    copy_state_accuracy,
    evaluate_world_model,
    frozen_lake_maps,
    joined_cells,
    map_env_factory,
    saved_format,
    sft_rows,
    spaced_cells,
    split_transitions,
    tokenizer_corpus,
    train_world_model,
)
from tandem.lm_inside_agents.prompts import TransitionParseError, parse_transition, transition_completion


@pytest.mark.parametrize("reward,done", [(0.0, False), (1.0, True), (-10.0, False), (0.25, True), (20.0, True)])
def test_completion_round_trip(reward, done):
    state = "task: x\nyou: row 1, column 2\nSF@F\nFHFG"
    assert parse_transition(transition_completion(state, reward, done)) == (state, reward, done)


@pytest.mark.parametrize(
    "text,problem",
    [
        ("", "got 1 line"),
        ("SFFF\nreward: 1", "got 2 line"),
        ("SFFF\nrewrd: 1\ndone: no", "should start with 'reward: '"),
        ("SFFF\nreward: lots\ndone: no", "not a number"),
        ("SFFF\nreward: nan\ndone: no", "not finite"),
        ("SFFF\nreward: 1\ndone: maybe", "'done: yes' or 'done: no'"),
        ("SFFF\nreward: 1\ndone: no\nextra", "should start with 'reward: '"),
    ],
)
def test_malformed_text_is_rejected_with_reason(text, problem):
    with pytest.raises(TransitionParseError, match=problem):
        parse_transition(text)


def test_spaced_cells_put_one_map_cell_per_token_and_read_back_exactly():
    state = "task: walk from S to the goal G without stepping into a hole H\nyou: row 0, column 1\nS@FF\nFHFH"
    spaced = spaced_cells(state)
    assert spaced.split("\n")[:2] == state.split("\n")[:2] and spaced.split("\n")[2:] == ["S @ F F", "F H F H"]
    assert joined_cells(spaced) == state
    minigrid = "mission: go to the red ball\n## .. @>"  # already-spaced two-character cells survive the round trip
    assert joined_cells(spaced_cells(minigrid)) == minigrid
    assert joined_cells("task: x\nS@ FF") == "task: x\nS@ FF"  # a row the model wrote unspaced is not "repaired"


def test_a_spaced_world_model_writes_spaced_prompts_and_reads_plain_states():
    from tandem.generation.sampling import Samples

    class Echo:  # an engine that answers the spaced next state, as a model trained on spaced rows would
        def __init__(self):
            self.prompts = []

        def sample(self, prompts, **_):
            self.prompts += prompts
            return Samples([], [], ["task: x\nF @\nreward: 0\ndone: no" for _ in prompts])

    engine = Echo()
    world_model = LMWorldModel(torch.nn.Linear(1, 1), None, ["left", "right"], engine=engine, spaced=True)
    prediction = world_model.predict(["task: x\n@F"], [1])[0]
    assert prediction.valid and prediction.next_state == "task: x\nF@"
    assert "task: x\n@ F\naction: right" in engine.prompts[0]
    row = sft_rows([TextTransition("task: x\n@F", "right", "task: x\nF@", 0.0, False)], spaced=True)[0]
    assert row["prompt"] == engine.prompts[0] and row["completion"].startswith("task: x\nF @\n")


def test_end_repeats_write_each_ending_transition_that_many_times_in_place():
    goes_on = TextTransition("s0", "right", "s1", 0.0, False)
    ends = TextTransition("s1", "right", "s2", 1.0, True)
    rows = sft_rows([goes_on, ends, goes_on], end_repeats=3)
    assert [r["completion"].endswith("yes") for r in rows] == [False, True, True, True, False]
    assert rows[1:4] == sft_rows([ends]) * 3 and sft_rows([goes_on, ends]) == [rows[0], rows[1]]


def written_ends(run) -> list[bool]:
    """For each row of a world-model run's train.jsonl: whether its transition ends the episode."""
    return [json.loads(line)["completion"].endswith("yes") for line in (run / "train.jsonl").read_text().splitlines()]


def deterministic_lake():
    return gym.make("FrozenLake-v1", map_name="4x4", is_slippery=False)


def test_collected_transitions_follow_the_true_dynamics():
    transitions = collect_transitions(lambda i: deterministic_lake(), 40, seed=0)
    keys = [(t.state, t.action) for t in transitions]
    assert len(keys) == len(set(keys))  # distinct (state, action) pairs
    env = deterministic_lake()
    env.reset(seed=0)
    by_text = {render_state(env, s): s for s in range(16)}
    model, names = EnvModel(env), action_names(env)
    for t in transitions:
        p = model.predict([by_text[t.state]], [names.index(t.action)])[0]
        assert (render_state(env, p.next_state), p.reward, p.done) == (t.next_state, t.reward, t.done)


def test_split_is_disjoint_complete_and_seeded():
    transitions = [TextTransition(f"s{i}", "left", f"s{i + 1}", 0.0, False) for i in range(50)]
    train, held = split_transitions(transitions, 0.2, seed=3)
    assert len(held) == 10 and len(train) == 40
    assert set(train).isdisjoint(held) and set(train) | set(held) == set(transitions)
    assert split_transitions(transitions, 0.2, seed=3) == (train, held)
    with pytest.raises(ValueError, match="eval_fraction"):
        split_transitions(transitions, 1.0)
    with pytest.raises(ValueError, match="too few"):
        split_transitions(transitions[:1], 0.5)


def test_copy_state_baseline_counts_unchanged_states():
    rows = [TextTransition("a", "x", "a", 0, False), TextTransition("a", "y", "b", 0, False),
            TextTransition("b", "x", "b", 0, True), TextTransition("c", "x", "d", 0, False)]
    assert copy_state_accuracy(rows) == 0.5


def test_tokenizer_corpus_keeps_only_words():
    assert list(tokenizer_corpus(["you: row 1, column 2\nSF@F"])) == ["you row column"]


def test_frozen_lake_maps_are_distinct_and_seeded():
    maps = frozen_lake_maps(6, 4, seed=1)
    assert len({"".join(m) for m in maps}) == 6 and maps == frozen_lake_maps(6, 4, seed=1)
    assert all(m[0][0] == "S" and m[-1][-1] == "G" for m in maps)
    env = map_env_factory("FrozenLake-v1", maps)(7)
    assert [row.tobytes().decode() for row in env.unwrapped.desc] == list(maps[1])


class ScriptedModel:
    n_actions = 2

    def __init__(self, answers):
        self.answers = answers

    def predict(self, states, actions):
        return [self.answers[(s, a)] for s, a in zip(states, actions)]


def test_world_model_env_steps_and_ends_on_unreadable_output():
    model = ScriptedModel({("a", 0): Prediction("b", 0.0, False), ("b", 1): Prediction(None, 0.0, True, error="garbled"),
                           ("b", 0): Prediction("c", 1.0, True)})
    env = WorldModelEnv(model)
    assert env.reset(options={"state": "a"})[0] == "a"
    assert env.step(0) == ("b", 0.0, False, False, {})
    state, reward, terminated, truncated, info = env.step(1)
    assert (state, reward, terminated, info["error"], env.n_errors) == ("b", 0.0, True, "garbled", 1)
    assert env.step(0)[:3] == ("c", 1.0, True)
    with pytest.raises(ValueError, match="outside"):
        env.step(5)
    with pytest.raises(ValueError, match="initial_state"):
        WorldModelEnv(model).reset()


def test_untrained_lm_output_is_counted_as_parse_errors(tiny_model_dir):
    from tandem.models.loading import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    world_model = LMWorldModel(load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir), ["left", "right"],
                               max_new_tokens=6)
    predictions = world_model.predict(["SF@F", "SF@F", "@FFF"], [0, 0, 1])
    assert all(not p.valid and p.done for p in predictions)
    assert world_model.n_parse_errors == 2 and world_model.n_queries == 3  # the repeated query is cached
    env = WorldModelEnv(world_model)
    env.reset(options={"state": "SF@F"})
    _, reward, terminated, _, info = env.step(1)
    assert terminated and reward == 0.0 and "error" in info


def test_the_sequence_length_holds_every_transition_or_the_run_stops(tmp_path):
    """An 8x8 map's transition is ~233 tokens: unset, --max-length fits the longest (the SFT run trains on every
    token of every completion, reward and end included); given shorter, the run stops before training, naming both."""
    make_env = map_env_factory("FrozenLake-v1", frozen_lake_maps(2, 8, seed=0))
    train, held_out = split_transitions(collect_transitions(make_env, 6, seed=0), 0.25, seed=0)
    config = WorldModelTrainConfig(out=tmp_path / "short", max_length=64, max_steps=1, progress=False)
    with pytest.raises(ValueError, match=r"--max-length 64 cuts the longest transition \((\d+) tokens"):
        train_world_model(config, train, held_out, action_names(make_env(0)))
    assert not (tmp_path / "short" / "lm").exists()
    config = WorldModelTrainConfig(out=tmp_path / "fit", max_steps=1, batch_size=4, progress=False)
    world_model, _ = train_world_model(config, train, held_out, action_names(make_env(0)))
    tokenizer = world_model.tokenizer
    longest = max(len(tokenizer(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"])
                  for r in sft_rows([*train, *held_out])) + 1
    import yaml
    assert yaml.safe_load((tmp_path / "fit" / "lm" / "config.yaml").read_text())["max_length"] == longest > 192


@pytest.mark.e2e
def test_world_model_learns_held_out_transitions_and_plans(tmp_path):
    """End to end: a tiny LM trained on FrozenLake text transitions predicts held-out next states exactly far more
    often than copying the state, and planning in it reaches goals."""
    maps = frozen_lake_maps(40, 4, seed=0)
    make_env = map_env_factory("FrozenLake-v1", maps)
    transitions = collect_transitions(make_env, 400, seed=0)
    train, held_out = split_transitions(transitions, 0.2, seed=0)
    # 600 steps: at 300 (batch 32) the held-out accuracy sat on the edge of generalising and swung with rounding
    # (0.17-0.82 for seeds 0-1 and for fp32 vs bf16, the same math to 1e-7); at 400 steps of 16, 0.21. At 600
    # steps of 16 (half the compute of 32): 1.000 / 0.975 at seeds 0 / 2 against the copy baseline 0.255, and
    # 4 / 3 of the first 4 planned episodes won
    config = WorldModelTrainConfig(out=tmp_path / "wm", max_steps=600, batch_size=16, progress=False, seed=0)
    world_model, _ = train_world_model(config, train, held_out, action_names(make_env(0)))
    metrics = evaluate_world_model(world_model, held_out)
    assert metrics["next_state_accuracy"] > metrics["copy_state_baseline"] + 0.3, metrics
    assert json.loads((tmp_path / "wm" / "train.jsonl").read_text().splitlines()[0]) == sft_rows(train[:1])[0]
    # planning in the LM on the training maps: far more goals than a random walk (which almost never gets there)
    wins = [plan_episode(make_env(i), world_model, "tree", seed=i, horizon=8).success for i in range(4)]
    assert sum(wins) >= 2, wins


@pytest.mark.e2e
def test_world_model_command_smoke_with_an_untrained_model(tmp_path):
    """The whole `tandem world-model` run on a few steps: an almost untrained LM mostly writes unreadable text,
    which must be counted and survived (planning and Dyna still finish), and the report and plot written."""
    from tandem.lm_as_agent.imagined import register
    from tandem.cli import add_command, app
    from typer.testing import CliRunner

    if "world-model" not in {c.name for c in app.registered_commands}:
        register(add_command)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "world-model", "--out", str(out), "--n-maps", "2", "--episodes", "6", "--max-steps", "2", "--batch-size", "4",
        "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--horizon", "1", "--plan-episodes", "1",
        "--dyna-real-steps", "10", "--dyna-planning-steps", "1", "--dyna-seeds", "1", "--no-progress", "--end-repeats", "3",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["n_train"] + report["n_held_out"] == report["n_transitions"]
    ends = written_ends(out)
    held_out = (out / "held_out.jsonl").read_text().splitlines()
    assert len(ends) == report["n_train"] + 2 * sum(ends) // 3 and len(held_out) == report["n_held_out"]
    assert 0 <= report["held_out"]["next_state_accuracy"] <= 1
    assert report["lm_parse_errors"] <= report["lm_queries"]
    assert set(report["dyna"]) == {"q_learning", "dyna_q_table", "dyna_true_model", "dyna_lm_world_model",
                                   "dyna_lm_world_model_remembering"} and report["finished"] == "all"
    assert 0 < report["lm_model_check"]["pairs"] <= 16 * 4
    assert (out / "world_model.png").exists() and (out / "lm" / "model" / "model.safetensors").exists()
    again = tmp_path / "again"  # the trained model measured again, no training: the same held-out figures
    result = CliRunner().invoke(app, [
        "world-model", "--out", str(again), "--trained", str(out), "--n-maps", "2", "--episodes", "6",
        "--plan-episodes", "0", "--dyna-real-steps", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    reread = json.loads((again / "metrics.json").read_text())
    assert reread["held_out"] == report["held_out"] and reread["sft"] == {"trained": str(out)}
    assert not (again / "lm").exists()
    bad = CliRunner().invoke(app, ["world-model", "--out", str(out), "--env", "CartPole-v1"])
    assert bad.exit_code == 2 and "FrozenLake or Taxi" in bad.output


def held_out_nll(model_dir, rows) -> float:
    """Mean NLL per completion token (its EOS included) of prompt/completion rows, as SFT's eval/loss counts it."""
    from tandem.data import tokenize_sft
    from tandem.models.loading import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(model_dir).eval(), load_tokenizer(model_dir)
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids = tokenize_sft(row, tokenizer)
            labels = [t if m else -100 for t, m in zip(ids["input_ids"], ids["completion_mask"])]
            n = sum(m for m in ids["completion_mask"][1:])
            total += float(model(torch.tensor([ids["input_ids"]]), labels=torch.tensor([labels])).loss) * n
            count += n
    return total / count


def test_fine_tuning_a_pretrained_lm_lowers_its_held_out_loss_and_plans(tmp_path, pretrained_llama_dir):
    """`--model`: the checkpoint and its own tokenizer are fine-tuned (no tiny model, no new tokenizer). 40 steps
    took the random hidden-32 Llama from 6.2 to 3.7 nats per held-out completion token (0.6x; 0.8x asked)."""
    make_env = map_env_factory("FrozenLake-v1", frozen_lake_maps(4, 4, seed=0))
    train, held_out = split_transitions(collect_transitions(make_env, 40, seed=0), 0.2, seed=0)
    config = WorldModelTrainConfig(out=tmp_path / "wm", model=pretrained_llama_dir, max_steps=40, batch_size=16,
                                   lr=3e-3, progress=False, seed=0, spaced_cells=True)
    world_model, metrics = train_world_model(config, train, held_out, action_names(make_env(0)))
    rows = sft_rows(held_out, spaced=True)  # --spaced-cells: map rows one cell per token
    saved = saved_format(tmp_path / "wm" / "lm" / "model")
    assert world_model.spaced and saved["spaced_cells"] and saved["max_new_tokens"] == world_model.max_new_tokens
    assert json.loads((tmp_path / "wm" / "held_out.jsonl").read_text().splitlines()[0]) == rows[0]
    before, after = held_out_nll(pretrained_llama_dir, rows), held_out_nll(tmp_path / "wm" / "lm" / "model", rows)
    assert after < 0.8 * before, (before, after)
    assert metrics["eval/loss"] == pytest.approx(after, rel=0.05)  # the SFT run's own held-out figure agrees
    assert not (tmp_path / "wm" / "init").exists() and len(world_model.tokenizer) == 512  # the checkpoint's tokenizer
    assert 0 <= evaluate_world_model(world_model, held_out)["next_state_accuracy"] <= 1
    assert plan_episode(make_env(0), world_model, "tree", seed=0, horizon=2).steps >= 1  # planning runs in it


def test_world_model_command_on_a_gguf_file_with_lora(tmp_path, tiny_gguf_file):
    """`tandem world-model --model FILE.gguf --lora-rank 2`: pretrained defaults, adapters merged into lm/model."""
    import yaml
    from typer.testing import CliRunner

    from tandem.lm_as_agent.imagined import register
    from tandem.cli import add_command, app

    if "world-model" not in {c.name for c in app.registered_commands}:
        register(add_command)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "world-model", "--model", str(tiny_gguf_file), "--lora-rank", "2", "--out", str(out), "--n-maps", "2",
        "--episodes", "6", "--max-steps", "2", "--batch-size", "4", "--horizon", "1", "--plan-episodes", "1",
        "--dyna-real-steps", "10", "--dyna-planning-steps", "1", "--dyna-seeds", "1", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["model"] == str(tiny_gguf_file) and 0 <= report["held_out"]["next_state_accuracy"] <= 1
    sft = yaml.safe_load((out / "lm" / "config.yaml").read_text())
    assert (sft["lr"], sft["epochs"], sft["lora_rank"], sft["chat_template"]) == (1e-4, 4.5, 2, "off")
    ends = written_ends(out)
    assert sum(ends) > 0 and len(ends) == report["n_train"] + 3 * sum(ends) // 4  # ends written 4 times by default
    assert (out / "lm" / "model" / "config.json").exists() and not (out / "lm" / "model" / "adapter_config.json").exists()
    bad = CliRunner().invoke(app, ["world-model", "--out", str(out), "--lora-rank", "2"])
    assert bad.exit_code == 2 and "--model" in bad.output
