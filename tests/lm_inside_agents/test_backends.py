"""Language-model backends for agents: local HF scoring, an OpenAI-compatible endpoint (fake server), functions,
the oracle stand-in, and a tiny model trained on demonstrations."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gymnasium as gym
import numpy as np
import pytest
import torch

from tandem.lm_inside_agents.backends import (
    EndpointError,
    FunctionBackend,
    HFBackend,
    OpenAIBackend,
    action_agreement,
    action_prompt,
    demonstration_examples,
    expected_digit_progress,
    expert_episodes,
    oracle_backend,
    steps_to_go_digit,
    tabular_expert,
    train_demo_backend,
)
from tandem.lm_inside_agents.prompts import next_state_text, progress_prompt, transition_prompt
from tandem.lm_inside_agents.render import action_names, render_state
from tandem.lm_inside_agents.world_model import TextTransition, sft_rows


@pytest.fixture
def lake():
    return gym.make("FrozenLake-v1", map_name="4x4", is_slippery=False)


def test_expected_digit_progress():
    assert expected_digit_progress([0.0] * 10) == pytest.approx(0.5)
    one_hot = [-1e9] * 10
    one_hot[7] = 0.0
    assert expected_digit_progress(one_hot) == pytest.approx(7 / 9)
    two = [-1e9] * 10
    two[0], two[9] = np.log(0.25), np.log(0.75)
    assert expected_digit_progress(two) == pytest.approx(0.75)


def test_hf_backend_scores_by_log_probability(tiny_model_dir):
    backend = HFBackend(tiny_model_dir, max_new_tokens=8)
    names = ["left", "down", "right", "up"]
    prompt = action_prompt("you: row 0, column 0", names)
    scores = backend.completion_log_probs(prompt, [f" {n}" for n in names])
    # brute force: one sequence at a time, sum of log p(token | prefix) over the completion tokens
    tok, model = backend.tokenizer, backend.model
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    for name, score in zip(names, scores):
        ids = prompt_ids + tok(f" {name}", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        manual = sum(float(log_probs[k - 1, ids[k]]) for k in range(len(prompt_ids), len(ids)))
        assert score == pytest.approx(manual, abs=1e-4)
    assert backend.propose_action("you: row 0, column 0", names) == int(np.argmax(scores))
    # rate_progress is the probability-weighted digit of the same log-prob scoring
    state = "you: row 0, column 0"
    digits = backend.completion_log_probs(progress_prompt(state, "reach G"), [f" {d}" for d in range(10)])
    assert backend.rate_progress(state, "reach G") == pytest.approx(expected_digit_progress(digits))
    # predict_next_state: greedy decoding of the world model's training prompt, the reward/done lines dropped
    from tandem.generation.sampling import generate_completions

    greedy = generate_completions(model, tok, [transition_prompt(state, "right")], max_new_tokens=8, temperature=0.0)[0]
    assert backend.predict_next_state(state, "right") == next_state_text(greedy)


def test_hf_backend_asks_a_world_model_as_it_was_trained(tiny_model_dir, monkeypatch):
    """A model fine-tuned by `world_model.train_world_model` learnt `sft_rows`' prompt -> completion; the backend
    must send that very prompt and return the next-state part of that completion."""
    from tandem.generation import Samples
    from tandem.generation.engines import HFEngine

    transition = TextTransition("you: row 0, column 0\n@FF\nFFG", "right", "you: row 0, column 1\nF@F\nFFG", 0.0, False)
    row = sft_rows([transition])[0]
    asked = []

    def trained_world_model(engine, prompts, **options):
        asked.extend(prompts)
        return Samples([], [], [row["completion"] if prompt == row["prompt"] else "" for prompt in prompts])

    monkeypatch.setattr(HFEngine, "sample", trained_world_model)  # the backend generates through its engine
    backend = HFBackend(tiny_model_dir)
    assert backend.predict_next_state(transition.state, transition.action) == transition.next_state
    assert asked == [row["prompt"]]
    # the endpoint backend asks in the same format, and drops the reward/done lines from a reply too
    server = FakeChatServer([(200, row["completion"])])
    try:
        endpoint = OpenAIBackend(server.url, model="fake", backoff_s=0.0)
        assert endpoint.predict_next_state(transition.state, transition.action) == transition.next_state
        assert server.requests[0][2]["messages"][-1]["content"].startswith(row["prompt"])
    finally:
        server.close()


class FakeChatServer:
    """A tiny OpenAI-compatible server on 127.0.0.1 replying with queued (status, content) pairs."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, self.headers.get("Authorization"), body))
                status, content = server.replies.pop(0) if server.replies else (200, "up")
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}
                                     if status == 200 else {"error": content}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_backend_against_fake_server():
    server = FakeChatServer([(200, "I would go Right."), (503, "busy"), (200, "down"), (200, "no idea"),
                             (200, "Progress: 6"), (200, "@FF\nFFG\n")])
    try:
        backend = OpenAIBackend(server.url, model="fake", api_key="k", backoff_s=0.0)
        names = ["left", "down", "right", "up"]
        assert backend.propose_action("state", names) == 2
        assert backend.propose_action("state", names) == 1  # the 503 was retried
        assert backend.propose_action("state", names) is None and backend.unreadable == 1
        assert backend.rate_progress("state", "goal") == pytest.approx(6 / 9)
        assert backend.predict_next_state("state", "right") == "@FF\nFFG"
        path, auth, body = server.requests[0]
        assert path == "/v1/chat/completions" and auth == "Bearer k" and body["model"] == "fake"
        assert "actions: left, down, right, up" in body["messages"][-1]["content"]
    finally:
        server.close()


def test_openai_backend_errors():
    server = FakeChatServer([(400, "bad request"), (500, "a"), (500, "b"), (500, "c")])
    try:
        backend = OpenAIBackend(server.url, model="fake", max_retries=2, backoff_s=0.0)
        with pytest.raises(EndpointError, match="HTTP 400"):
            backend.chat("hi")
        with pytest.raises(EndpointError, match="after 3 attempts"):
            backend.chat("hi")
    finally:
        server.close()
    closed = OpenAIBackend(server.url, model="fake", max_retries=1, backoff_s=0.0, timeout_s=2.0)
    with pytest.raises(EndpointError, match="failed after 2 attempts"):
        closed.chat("hi")


def test_function_backend():
    backend = FunctionBackend(propose=lambda text, names: len(names) - 1, rate=lambda s, g: 1.7)
    assert backend.propose_action("x", ["a", "b"]) == 1
    assert backend.rate_progress("x", "g") == 1.0  # clipped to [0, 1]
    with pytest.raises(NotImplementedError, match="predict"):
        backend.predict_next_state("x", "a")


def test_tabular_expert_and_oracle(lake):
    policy, progress = tabular_expert(lake)
    start = render_state(lake, 0)
    assert policy[start] in (1, 2)  # down or right from the start of the 4x4 lake
    assert progress[render_state(lake, 14)] > progress[start]
    oracle = oracle_backend(lake, noise=0.0)
    assert all(oracle.propose_action(text, action_names(lake)) == a for text, a in policy.items())
    noisy = oracle_backend(lake, noise=1.0, seed=0)
    picks = [noisy.propose_action(start, action_names(lake)) for _ in range(400)]
    assert set(picks) == {0, 1, 2, 3}


def test_demonstrations(lake):
    episodes = expert_episodes(lake, 5, seed=0)
    assert episodes and all(len(steps) >= 1 for steps in episodes)
    rows = demonstration_examples(episodes, action_names(lake))
    assert len(rows) == 2 * sum(len(steps) for steps in episodes)
    first_text, first_action = episodes[0][0]
    assert rows[0] == {"prompt": action_prompt(first_text, action_names(lake)),
                       "completion": " " + action_names(lake)[first_action]}
    assert rows[1]["completion"] == f" {steps_to_go_digit(len(episodes[0]))}"
    assert steps_to_go_digit(1) == 9 and steps_to_go_digit(2) == 8 and steps_to_go_digit(60) == 0
    assert action_agreement(oracle_backend(lake, noise=0.0), lake, episodes) == 1.0


def test_babyai_bot_demonstrations():
    import minigrid  # noqa: F401

    env = gym.make("BabyAI-GoToRedBallGrey-v0")
    episodes = expert_episodes(env, 3, seed=0)
    assert len(episodes) == 3
    assert all(steps[0][0].startswith("mission: go to the red ball") for steps in episodes)


@pytest.mark.e2e
def test_tiny_model_learns_expert_actions(lake, tmp_path):
    """Fine-tuned on rendered demonstrations, the tiny model agrees with the expert far above chance (0.25)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backend = train_demo_backend(lake, tmp_path / "demo", n_episodes=40, steps=60, progress_bar=False)
    finally:
        torch.set_num_threads(threads)
    fresh = expert_episodes(lake, 20, seed=1000)  # new episodes (the 4x4 lake has only 11 live states)
    assert action_agreement(backend, lake, fresh) > 0.6
    assert (tmp_path / "demo" / "demos.jsonl").exists() and (tmp_path / "demo" / "sft" / "model" / "config.json").exists()


@pytest.mark.e2e
def test_a_pretrained_checkpoint_is_warm_started_on_the_same_demonstrations(lake, tmp_path):
    """With base_model, the demonstrations fine-tune that checkpoint (with its own tokenizer), not a new tiny model."""
    from transformers import AutoTokenizer

    from tandem.lm_inside_agents.backends import demonstration_examples
    from tandem.lm_inside_agents.render import action_names
    from tandem.models.factory import MODEL_SIZES, build_model
    from tandem.models.tokenizer import train_tokenizer

    # a stand-in for a pretrained checkpoint: a tiny model whose tokenizer knows grid text, saved as a HF folder
    rows = demonstration_examples(expert_episodes(lake, 20, seed=5000), action_names(lake), True)
    tokenizer = train_tokenizer((r["prompt"] + r["completion"] for r in rows), vocab_size=MODEL_SIZES["tiny"].vocab_size)
    base = tmp_path / "base"
    build_model(MODEL_SIZES["tiny"], tokenizer, seed=1).save_pretrained(base)
    tokenizer.save_pretrained(base)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backend = train_demo_backend(lake, tmp_path / "demo", n_episodes=40, steps=60, progress_bar=False,
                                     base_model=base)
    finally:
        torch.set_num_threads(threads)
    assert not (tmp_path / "demo" / "init").exists()
    assert backend.tokenizer.get_vocab() == AutoTokenizer.from_pretrained(base).get_vocab()
    fresh = expert_episodes(lake, 20, seed=1000)
    assert action_agreement(backend, lake, fresh) > max(0.6, action_agreement(HFBackend(base), lake, fresh))
