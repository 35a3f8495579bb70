"""The LM world model as an environment: imagined steps in training, the real env in evaluation."""

from tandem.lm_as_agent.env import make_env_suite
from tandem.lm_as_agent.imagined import ImaginedEnv
from tandem.lm_inside_agents.world_model import Prediction


class ScriptedModel:
    """Stands in for an LMWorldModel: the next state says which action was taken; 'up' is unreadable."""

    def __init__(self):
        self.queries = []

    def predict(self, states, actions):
        self.queries += list(zip(states, actions))
        if actions[0] == 3:
            return [Prediction(None, 0.0, True, error="not understood")]
        return [Prediction(f"after {actions[0]}", 1.0 if actions[0] == 2 else 0.0, actions[0] == 2)]


def test_imagined_steps_come_from_the_world_model():
    real = make_env_suite("frozenlake:size=4").make("train")
    model = ScriptedModel()
    env = ImaginedEnv(real, model)
    start = env.reset(seed=5)
    assert start == real.reset(seed=5) and env.instructions == real.instructions  # a real start state
    step = env.step("down")
    assert step.observation == "after 1" and not step.terminated and model.queries == [(start, 1)]
    assert env.step("dance").info["invalid_action"] and len(model.queries) == 1  # invalid: no model query
    win = env.step("right")
    assert win.terminated and win.reward == 1.0 and win.info["success"]
    env.reset(seed=5)
    broken = env.step("up")
    assert broken.terminated and broken.reward == 0 and broken.info["world_model_error"] == "not understood"


def test_a_saved_world_model_is_loaded_in_the_text_format_it_was_trained_on(tmp_path, tiny_model_dir):
    """`agent-rl --env worldmodel:DIR` asks the model in its training format: spaced map cells when its run wrote
    them (`tandem_world_model.json` beside the weights), plain cells for a model saved without that record."""
    import shutil

    from tandem.lm_inside_agents.world_model import FORMAT_FILE, load_world_model

    assert not load_world_model(tiny_model_dir, ["left", "right"]).spaced
    folder = tmp_path / "run" / "lm" / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / FORMAT_FILE).write_text('{"spaced_cells": true}\n')
    assert load_world_model(tmp_path / "run", ["left", "right"]).spaced


class CachedScript:
    """An LMWorldModel's batching and cache without a model: a corridor's true next state; records each decode's
    batch (the (state, action) pairs not cached yet)."""

    def __init__(self):
        self.cache, self.decodes = {}, []

    def predict(self, states, actions):
        keys = list(zip(states, actions))
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            self.decodes.append(missing)
            for state, action in missing:
                position = max(0, state.index("@") + (1 if action == 1 else -1))
                done = position == len(state) - 1
                text = "".join("@" if i == position else ("G" if i == len(state) - 1 else ".") for i in range(len(state)))
                self.cache[(state, action)] = Prediction(text, float(done), done)
        return [self.cache[k] for k in keys]


def test_imagined_episodes_decode_each_turn_in_one_batch(sentiment_tokenizer):
    """All active imagined episodes' steps of a turn go to the world model in one decode (`prefetch`), and the
    episodes are the ones stepping one at a time gives."""
    from tandem.generation.rollout import SampledRow, SamplingConfig
    from tandem.lm_as_agent.env import Corridor
    from tandem.lm_as_agent.rollout import RolloutOptions, chat_format, play_text_episodes

    replies = iter(["right", "left", "right", "right", "dance", "right"] * 20)

    def sampler(prompts, places):
        return [SampledRow([5], [0.0], True, next(replies)) for _ in prompts]

    model = CachedScript()
    envs = [ImaginedEnv(Corridor(4), model) for _ in range(6)]
    episodes = play_text_episodes(None, sentiment_tokenizer, chat_format(sentiment_tokenizer, False), envs, list(range(6)),
                                  list(range(6)), SamplingConfig(max_new_tokens=4), RolloutOptions(max_turns=8),
                                  sampler=sampler)
    turns = max(len(e.turns) for e in episodes)
    assert len(model.decodes) <= turns and max(len(d) for d in model.decodes) > 1  # one batched decode a turn
    alone = CachedScript()
    replies = iter(["right", "left", "right", "right", "dance", "right"] * 20)
    for episode in episodes:  # the same replies, stepped one env at a time
        env = ImaginedEnv(Corridor(4), alone)
        env.reset(seed=0)
        for turn in episode.turns:
            result = env.step(turn.action)
            assert (result.observation, result.reward) == (turn.observation, turn.env_reward)
    assert all(e.success for e in episodes if e.done and e.turns[-1].env_reward > 0)


def test_a_world_model_of_an_agent_env_records_its_env_and_is_an_env_to_train_in(tmp_path):
    """`tandem world-model --env corridor:length=3` learns the agent env's own observations (random play from its
    training start states); the saved run names its env, so `worldmodel:RUN` needs no env option: training
    episodes are imagined, evaluation is the real corridor."""
    from tandem.lm_as_agent.env import Corridor, make_env_suite
    from tandem.lm_as_agent.imagined import run_agent_world_model
    from tandem.lm_inside_agents.experiments.world_model import WorldModelConfig
    from tandem.lm_inside_agents.world_model import saved_format

    out = tmp_path / "wm"
    config = WorldModelConfig(out=out, env="corridor:length=3", episodes=30, max_steps=2, batch_size=4, hidden_size=32,
                              num_layers=1, num_heads=2, progress=False)
    report = run_agent_world_model(config)
    assert report["n_transitions"] == 6  # cells 0-2 x 2 actions (the goal, cell 3, ends the episode), each seen once
    assert "planning" not in report and "dyna" not in report
    assert saved_format(out / "lm" / "model")["env"] == "corridor:length=3"
    suite = make_env_suite(f"worldmodel:{out}")
    assert isinstance(suite.make("train"), ImaginedEnv) and isinstance(suite.make("eval"), Corridor)
    assert suite.make("train").names == ["left", "right"]
