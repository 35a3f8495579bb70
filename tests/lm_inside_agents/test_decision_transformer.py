"""Decision Transformer (eq. 13): token layout, causal masking, return-to-go decrement, and offline learning."""

import numpy as np
import pytest
import torch

from tandem.lm_inside_agents.decision_transformer import (
    DecisionTransformer,
    DTShape,
    EpisodeContext,
    WindowSampler,
    attention_block_mask,
    decrement_return_to_go,
    evaluate_decision_transformer,
    interleave_tokens,
    pretrained_decision_transformer,
    shape_for,
    train_decision_transformer,
)
from tandem.lm_inside_agents.episodes import random_actor, run_episodes, vector_env_by_id
from tandem.lm_inside_agents.offline_data import episodes_to_dataset, returns_to_go, space_metadata



def _model(discrete=True, condition_on_return=True, backbone=None, layers_kept=None, **kw):
    """A small DT; with `backbone` (a checkpoint folder) its transformer is that causal LM's decoder (its first
    `layers_kept` layers)."""
    torch.manual_seed(0)
    shape = DTShape(state_dim=3, action_dim=4 if discrete else 2, discrete=discrete, context=5, hidden=16,
                    layers=2, heads=2, dropout=0.0, max_timestep=50, condition_on_return=condition_on_return,
                    return_scale=10.0, action_low=None if discrete else [-2.0, -2.0],
                    action_high=None if discrete else [2.0, 2.0], **kw)
    if backbone is None:
        return DecisionTransformer(shape).eval()
    return pretrained_decision_transformer(shape, backbone, layers=layers_kept).eval()


@pytest.fixture(params=["own", "pretrained"])
def backbone(request):
    """Each masking test runs on the DT's own transformer and on a pretrained Hugging Face decoder."""
    return None if request.param == "own" else request.getfixturevalue("pretrained_llama_dir")


def _inputs(discrete=True, batch=2, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    actions = torch.randint(0, 4, (batch, k), generator=g) if discrete else torch.rand(batch, k, 2, generator=g) * 2 - 1
    return {
        "returns_to_go": torch.rand(batch, k, generator=g) * 10,
        "states": torch.randn(batch, k, 3, generator=g),
        "actions": actions,
        "timesteps": torch.arange(k).repeat(batch, 1) + 3,
        "real": torch.ones(batch, k),
    }


def _predict(model, inputs):
    with torch.no_grad():
        return model(inputs["returns_to_go"], inputs["states"], inputs["actions"], inputs["timesteps"], inputs["real"])


def test_interleave_orders_return_state_action_per_step():
    r, s, a = (torch.full((1, 3, 1), float(v)) + torch.arange(3.0).view(1, 3, 1) * 10 for v in (1, 2, 3))
    assert interleave_tokens(r, s, a).flatten().tolist() == [1, 2, 3, 11, 12, 13, 21, 22, 23]


def test_token_embeddings_sit_at_return_state_action_positions_with_a_shared_timestep():
    model, inputs = _model(), _inputs()
    tokens = model.embed(inputs["returns_to_go"], inputs["states"], inputs["actions"], inputs["timesteps"])
    assert tokens.shape == (2, 15, 16)
    time = model.embed_timestep(inputs["timesteps"])
    expected_return = model.embed_return(inputs["returns_to_go"].unsqueeze(-1) / 10.0) + time
    expected_state = model.embed_state(inputs["states"]) + time  # identity state statistics
    expected_action = model.embed_action(inputs["actions"]) + time
    torch.testing.assert_close(tokens[:, 0::3], expected_return)
    torch.testing.assert_close(tokens[:, 1::3], expected_state)
    torch.testing.assert_close(tokens[:, 2::3], expected_action)
    # moving step 2's timestep changes exactly its three tokens
    moved = dict(inputs, timesteps=inputs["timesteps"].clone())
    moved["timesteps"][:, 2] += 7
    changed = model.embed(moved["returns_to_go"], moved["states"], moved["actions"], moved["timesteps"]) != tokens
    assert changed.any(-1)[0].nonzero().flatten().tolist() == [6, 7, 8]


def test_attention_mask_is_causal_and_hides_left_padding():
    real = torch.tensor([[0.0, 1.0, 1.0]])
    blocked = attention_block_mask(real, tokens_per_step=3)[0]
    assert blocked.shape == (9, 9)
    assert blocked[torch.ones(9, 9, dtype=torch.bool).triu(1)].all()  # no token sees a later one
    assert blocked[3:, :3].all()  # real tokens never see the padded step
    assert not blocked.diagonal().any()  # every token sees itself (padding rows stay finite)
    assert not blocked[4, 3:5].any()  # s_2 sees R_2 and itself


@pytest.mark.parametrize("discrete", [True, False])
def test_action_prediction_cannot_peek_at_its_own_action_or_the_future(discrete, backbone):
    model, inputs = _model(discrete, backbone=backbone), _inputs(discrete)
    base = _predict(model, inputs)
    k = 2
    future = {key: value.clone() for key, value in inputs.items()}
    future["actions"][:, k:] = (future["actions"][:, k:] + 1) % 4 if discrete else -future["actions"][:, k:]
    future["states"][:, k + 1 :] += 5.0
    future["returns_to_go"][:, k + 1 :] += 5.0
    after = _predict(model, future)
    torch.testing.assert_close(after[:, : k + 1], base[:, : k + 1])  # a_k and earlier predictions unchanged
    assert not torch.allclose(after[:, k + 1 :], base[:, k + 1 :])
    for key in ("states", "returns_to_go"):  # the state token and its return-to-go do matter
        present = {name: value.clone() for name, value in inputs.items()}
        present[key][:, k] += 3.0
        assert not torch.allclose(_predict(model, present)[:, k], base[:, k])


def test_left_padding_does_not_change_real_predictions_and_bc_ignores_returns(backbone):
    model, inputs = _model(backbone=backbone), _inputs()
    inputs["real"][:, :2] = 0
    base = _predict(model, inputs)
    noisy = {key: value.clone() for key, value in inputs.items()}
    noisy["states"][:, :2] += 9.0
    noisy["returns_to_go"][:, :2] += 9.0
    torch.testing.assert_close(_predict(model, noisy)[:, 2:], base[:, 2:])
    assert torch.isfinite(base).all()
    bc = _model(condition_on_return=False, backbone=backbone)
    bc_inputs = _inputs()
    other = dict(bc_inputs, returns_to_go=bc_inputs["returns_to_go"] + 100.0)
    torch.testing.assert_close(_predict(bc, other), _predict(bc, bc_inputs))


def test_continuous_predictions_are_tanh_bounded_and_map_to_the_action_box():
    model = _model(discrete=False)
    inputs = _inputs(discrete=False)
    inputs["states"] *= 1000
    predicted = _predict(model, inputs)
    assert predicted.abs().max() <= 1.0
    np.testing.assert_allclose(model.from_unit(np.array([[-1.0, 0.0], [1.0, 0.5]])), [[-2.0, 0.0], [2.0, 1.0]])
    np.testing.assert_allclose(model.to_unit(model.from_unit(np.array([0.3, -0.7]))), [0.3, -0.7])


def test_return_to_go_is_decremented_by_each_reward_in_the_evaluation_context():
    assert decrement_return_to_go(100.0, 1.0) == 99.0
    context = EpisodeContext(target_return=10.0, first_state=np.zeros(3))
    for t, reward in enumerate([1.0, 2.0, 3.0]):
        context.record(t % 2, reward, next_state=np.full(3, t + 1.0))
    window = context.window(k=6, action_shape=(), action_dtype=np.int64)
    assert window["returns_to_go"].tolist() == [0, 0, 10, 9, 7, 4]
    assert window["timesteps"].tolist() == [0, 0, 0, 1, 2, 3]
    assert window["real"].tolist() == [0, 0, 1, 1, 1, 1]
    assert window["actions"].tolist() == [0, 0, 0, 1, 0, 0]  # last slot: the placeholder being predicted
    assert window["states"][-1].tolist() == [3.0, 3.0, 3.0] and context.total == 6.0
    short = context.window(k=2, action_shape=(), action_dtype=np.int64)
    assert short["returns_to_go"].tolist() == [7, 4] and short["timesteps"].tolist() == [2, 3]


def test_pretrained_backbone_starts_as_the_checkpoint_and_saves_with_its_shape(pretrained_llama_dir, tmp_path):
    """Reid et al. 2022: the DT's transformer blocks are the causal LM's decoder layers, weights and all (at step 0);
    the DT keeps its own embeddings and head, and width and depth come from the checkpoint."""
    from tandem.models.loading import load_causal_lm

    model = _model(backbone=pretrained_llama_dir)
    assert (model.shape.hidden, model.shape.layers, model.shape.heads) == (32, 2, 2)
    assert model.embed_state.out_features == 32 and model.predict_action.in_features == 32
    checkpoint = load_causal_lm(pretrained_llama_dir).model.state_dict()
    backbone = model.transformer.state_dict()
    assert set(backbone) == set(checkpoint)  # every layer, the final norm, and a stub vocabulary
    for name, weights in checkpoint.items():
        if name != "embed_tokens.weight":  # the vocabulary is never read: the DT feeds its own embeddings
            torch.testing.assert_close(backbone[name], weights, rtol=0, atol=0, msg=name)
    assert backbone["embed_tokens.weight"].shape == (1, 32)
    model.save(tmp_path / "dt")
    reloaded = DecisionTransformer.load(tmp_path / "dt")
    assert reloaded.shape == model.shape
    torch.testing.assert_close(_predict(reloaded, _inputs()), _predict(model, _inputs()))


def test_keeping_the_first_layers_of_a_checkpoint_keeps_their_weights(tmp_path, sentiment_tokenizer):
    """--model-layers N: the DT's transformer is the checkpoint's first N decoder layers and final norm, unchanged at
    step 0; the later layers are gone, from the module and from the saved shape."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(sentiment_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)
    torch.manual_seed(1)
    checkpoint = LlamaForCausalLM(config)
    checkpoint.save_pretrained(tmp_path / "llama3")
    sentiment_tokenizer.save_pretrained(tmp_path / "llama3")
    weights = checkpoint.model.state_dict()

    model = _model(backbone=tmp_path / "llama3", layers_kept=2)
    assert (model.shape.layers, model.shape.backbone["num_hidden_layers"], len(model.transformer.layers)) == (2, 2, 2)
    backbone = model.transformer.state_dict()
    kept = {name for name in weights if not name.startswith("layers.2.") and name != "embed_tokens.weight"}
    assert set(backbone) == kept | {"embed_tokens.weight"}
    for name in kept:
        torch.testing.assert_close(backbone[name], weights[name], rtol=0, atol=0, msg=name)
    model.save(tmp_path / "dt")
    reloaded = DecisionTransformer.load(tmp_path / "dt")
    assert len(reloaded.transformer.layers) == 2
    torch.testing.assert_close(_predict(reloaded, _inputs()), _predict(model, _inputs()))
    for impossible in (0, 4):
        with pytest.raises(ValueError, match="checkpoint has 3"):
            _model(backbone=tmp_path / "llama3", layers_kept=impossible)


def test_model_layers_option_needs_a_model_and_a_positive_count(tmp_path):
    from pydantic import ValidationError

    from tandem.lm_inside_agents.experiments.dt import DTConfig

    assert DTConfig(model=tmp_path, model_layers=2).model_layers == 2
    assert DTConfig().model_layers is None  # default: every layer
    with pytest.raises(ValidationError, match="give --model"):
        DTConfig(model_layers=2)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        DTConfig(model=tmp_path, model_layers=0)


def test_training_calls_the_checkpoint_hook_every_n_steps_in_eval_mode():
    envs = vector_env_by_id("CartPole-v1", 2)
    episodes = run_episodes(envs, random_actor(envs, 0), 4, seed=0, progress=False)
    dataset = _dataset_from(episodes, [0] * 4, envs, [{"name": "random", "mean_return": 0.0}])
    model = DecisionTransformer(shape_for(dataset, context=4, hidden=16, layers=1))
    seen = []
    losses = train_decision_transformer(model, dataset, steps=7, batch_size=4, progress=False, checkpoint_every=3,
                                        at_checkpoint=lambda step: seen.append((step, model.training)))
    assert seen == [(3, False), (6, False)] and len(losses) == 7


def _dataset_from(episodes, policy_index, envs, policies):
    metadata = space_metadata(envs, "CartPole-v1")
    metadata["policies"] = policies
    return episodes_to_dataset(episodes, policy_index, metadata)


def test_training_windows_stay_inside_one_episode_and_carry_its_return_to_go():
    envs = vector_env_by_id("CartPole-v1", 2)
    episodes = run_episodes(envs, random_actor(envs, 0), 6, seed=0, progress=False)
    dataset = _dataset_from(episodes, [0] * 6, envs, [{"name": "random", "mean_return": 0.0}])
    model = DecisionTransformer(shape_for(dataset, context=8))
    sampler = WindowSampler(dataset, model, seed=0)
    starts = np.array([0, len(episodes[0]["reward"]) - 3])
    batch = sampler.windows(starts)
    rtg = returns_to_go(dataset.rewards, dataset.episode_ids)
    assert batch["real"][0].tolist() == [1.0] * 8
    assert batch["timesteps"][0].tolist() == list(range(8))
    np.testing.assert_allclose(batch["returns_to_go"][0].numpy(), rtg[:8])
    assert batch["real"][1].tolist() == [0.0] * 5 + [1.0] * 3  # the episode's last 3 steps, left-padded
    np.testing.assert_allclose(batch["returns_to_go"][1, 5:].numpy(), [3.0, 2.0, 1.0])
    np.testing.assert_allclose(batch["states"][1, 5:].numpy(), dataset.observations[starts[1] : starts[1] + 3])


def heuristic_cartpole(epsilon: float, seed: int):
    """Push towards where the pole is falling; with probability epsilon a random push."""
    rng = np.random.default_rng(seed)

    def act(obs):
        greedy = (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)
        return np.where(rng.random(len(obs)) < epsilon, rng.integers(0, 2, len(obs)), greedy)

    return act


@pytest.mark.e2e
def test_decision_transformer_on_a_mixed_dataset_beats_the_random_policy(tmp_path):
    envs = vector_env_by_id("CartPole-v1", 4)
    random_episodes = run_episodes(envs, random_actor(envs, 0), 40, seed=1, progress=False)
    good_episodes = run_episodes(envs, heuristic_cartpole(0.2, 0), 20, seed=2, progress=False)
    random_return = float(np.mean([e["reward"].sum() for e in random_episodes]))
    good_return = float(np.mean([e["reward"].sum() for e in good_episodes]))
    dataset = _dataset_from(random_episodes + good_episodes, [0] * 40 + [1] * 20, envs,
                            [{"name": "random", "mean_return": random_return},
                             {"name": "heuristic", "mean_return": good_return}])
    model = DecisionTransformer(shape_for(dataset, context=10, hidden=32, layers=2, heads=1))
    losses = train_decision_transformer(model, dataset, steps=250, batch_size=32, seed=0, progress=False)
    assert np.mean(losses[-20:]) < 0.8 * losses[0]
    high = evaluate_decision_transformer(model, "CartPole-v1", float(dataset.episode_returns().max()), episodes=8)
    assert high.mean() > 2 * random_return, (high.mean(), random_return)  # ~250 vs ~20 in practice
    model.save(tmp_path / "dt")
    reloaded = DecisionTransformer.load(tmp_path / "dt")
    again = evaluate_decision_transformer(reloaded, "CartPole-v1", float(dataset.episode_returns().max()), episodes=8)
    np.testing.assert_allclose(again, high)


@pytest.fixture
def cli_app(monkeypatch):
    """A fresh typer app holding only the agents' commands (cli.add_command registers on `cli.app`)."""
    import typer

    from tandem import cli
    from tandem.lm_inside_agents.commands import register

    app = typer.Typer(pretty_exceptions_enable=False)
    monkeypatch.setattr(cli, "app", app)
    register(cli.add_command)
    return app


@pytest.mark.e2e
def test_cli_collect_then_dt_writes_metrics_and_the_target_plot(tmp_path, cli_app):
    import json

    from typer.testing import CliRunner

    runner = CliRunner()
    data = tmp_path / "data"
    result = runner.invoke(cli_app, ["collect", "--out", str(data), "--episodes", "12", "--ppo-steps", "4096",
                                     "--num-envs", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "12 episodes saved" in result.output
    out = tmp_path / "dt"
    result = runner.invoke(cli_app, ["dt", "--data", str(data), "--out", str(out), "--steps", "20", "--context", "4",
                                     "--hidden", "16", "--layers", "1", "--eval-episodes", "2", "--targets", "20,60",
                                     "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["target"] for row in metrics["dt"]["targets"]] == [20.0, 60.0]
    assert {"bc", "random_return", "best_behaviour_return"} <= set(metrics)
    assert (out / "returns.png").stat().st_size > 1000
    assert DecisionTransformer.load(out / "model").shape.context == 4
    bad = runner.invoke(cli_app, ["collect", "--out", str(tmp_path / "x"), "--mix", "greedy=1"])
    assert bad.exit_code == 2 and "mix" in bad.output
    missing = runner.invoke(cli_app, ["dt", "--data", str(tmp_path / "nowhere"), "--out", str(out)])
    assert missing.exit_code == 2 and "--data" in missing.output and "does not exist" in missing.output


def test_cli_dt_with_a_pretrained_model_trains_the_checkpoints_layers(tmp_path, cli_app, pretrained_llama_dir):
    import yaml
    from typer.testing import CliRunner

    from tandem.models.loading import load_causal_lm

    envs = vector_env_by_id("CartPole-v1", 2)
    episodes = run_episodes(envs, random_actor(envs, 0), 8, seed=0, progress=False)
    mean_return = float(np.mean([e["reward"].sum() for e in episodes]))
    _dataset_from(episodes, [0] * 8, envs, [{"name": "random", "mean_return": mean_return}]).save(tmp_path / "data")
    out = tmp_path / "dt"
    result = CliRunner().invoke(cli_app, ["dt", "--data", str(tmp_path / "data"), "--model", str(pretrained_llama_dir),
                                          "--model-layers", "1", "--out", str(out), "--steps", "5", "--context", "4",
                                          "--eval-episodes", "2", "--num-envs", "2", "--targets", "20", "--no-progress"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["lr"] == 1e-4 and saved["model_layers"] == 1  # the pretrained default; the layers kept
    checkpoint = load_causal_lm(pretrained_llama_dir).model.state_dict()
    for name in ("decision_transformer", "behaviour_cloning"):  # BC is the same network: the same pretrained layers
        model = DecisionTransformer.load(out / "model", name=name)
        assert (model.shape.hidden, model.shape.layers, model.shape.backbone["model_type"]) == (32, 1, "llama")
        trained = model.transformer.state_dict()
        assert not torch.equal(trained["layers.0.self_attn.q_proj.weight"], checkpoint["layers.0.self_attn.q_proj.weight"])
