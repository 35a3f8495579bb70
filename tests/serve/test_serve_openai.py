"""`tandem serve` used as a user would: the official `openai` client against a live server on loopback."""

import json
import threading

import httpx
import openai
import pytest
import torch

from tandem.generation import generate_completions
from tandem.models.loading import load_causal_lm, load_tokenizer

PROMPT = "Review: I watched the sequel with my sister and"


def test_models_lists_the_served_model(client):
    assert [model.id for model in client.models.list()] == ["tiny"]


def test_completion_matches_greedy_generation_of_the_model(client, tiny_model_dir):
    result = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0)
    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    [expected] = generate_completions(model, tokenizer, [PROMPT], max_new_tokens=12, temperature=0.0)
    assert result.choices[0].text == expected and result.choices[0].finish_reason in ("length", "stop")
    assert result.usage.prompt_tokens == len(tokenizer.encode(PROMPT, add_special_tokens=False))
    assert result.usage.completion_tokens == 12 or result.choices[0].finish_reason == "stop"


def test_completion_logprobs_are_the_model_log_probabilities(client, tiny_model_dir):
    result = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2)
    logprobs = result.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 5
    assert "".join(logprobs.tokens) == result.choices[0].text and logprobs.text_offset[0] == 0
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
        assert len(top) == 2 and max(top.values()) == pytest.approx(logprob) and top[token] == pytest.approx(logprob)  # greedy
    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    ids = tokenizer.encode(PROMPT, add_special_tokens=False)
    with torch.no_grad():
        first = model(input_ids=torch.tensor([ids])).logits[0, -1].log_softmax(-1)
    assert logprobs.token_logprobs[0] == pytest.approx(float(first.max()), abs=1e-4)


def test_chat_completion_with_top_logprobs(client):
    result = client.chat.completions.create(
        model="tiny", messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Review the film."}],
        max_tokens=6, temperature=0, logprobs=True, top_logprobs=3,
    )
    choice = result.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert 1 <= len(choice.logprobs.content) <= 6 and all(len(t.top_logprobs) == 3 for t in choice.logprobs.content)
    assert "".join(t.token for t in choice.logprobs.content).startswith(choice.message.content[:1])


def test_streaming_gives_the_same_text_in_chunks(client):
    whole = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=10,
                                                 temperature=0, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and len(chunks) > 3
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished == [whole.choices[0].finish_reason] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_raw_stream_is_server_sent_events_ending_with_done(live_server, api_key):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream("POST", live_server.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {api_key}"},
                      timeout=60) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "text_completion"


def test_stop_strings_cut_the_output_streamed_or_not(client):
    full = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0).choices[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop, "@@never@@"])
    assert cut.choices[0].text == full[: full.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == full[: full.index(stop)]


def test_n_choices_and_seeds(client):
    def sample(seed):
        result = client.completions.create(model="tiny", prompt=[PROMPT, "Review: the film"], max_tokens=6, n=2,
                                           temperature=1.0, seed=seed)
        return [(c.index, c.text) for c in result.choices]

    first = sample(5)
    assert [index for index, _ in first] == [0, 1, 2, 3] and first == sample(5) and first != sample(6)


@pytest.mark.parametrize("request_options, error, words", [
    ({"messages": []}, openai.BadRequestError, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, openai.BadRequestError, "role"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 65}, openai.BadRequestError, "limit of 64"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 5}, openai.BadRequestError, "n=5"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, openai.BadRequestError, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}, openai.BadRequestError, "logprobs"),
    ({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-9"}, openai.NotFoundError, "tiny"),
    ({"messages": [{"role": "user", "content": "x" * 9000}]}, openai.APIStatusError, "exceeds the limit"),
])
def test_bad_requests_get_clear_4xx_errors_and_the_server_keeps_serving(client, request_options, error, words):
    options = {"model": "tiny", "max_tokens": 2, **request_options}
    with pytest.raises(error) as raised:
        client.chat.completions.create(**options)
    assert 400 <= raised.value.status_code < 500 and words in raised.value.message
    assert raised.value.body["type"] == "invalid_request_error" or raised.value.status_code == 413
    assert client.completions.create(model="tiny", prompt="Review:", max_tokens=2).choices[0].text is not None


def test_malformed_json_and_unknown_routes_are_openai_errors(live_server, api_key):
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    response = httpx.post(live_server.url + "/v1/completions", content=b"{not json", headers=headers, timeout=30)
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    response = httpx.post(live_server.url + "/v1/completions", json={"model": "tiny", "prompt": [99999]}, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
    assert httpx.get(live_server.url + "/v1/nothing", headers=headers).json()["error"]["code"] == "not_found"


def test_the_api_key_is_enforced(live_server):
    wrong = openai.OpenAI(base_url=live_server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert httpx.post(live_server.url + "/v1/completions", json={}).status_code == 401
    assert httpx.get(live_server.url + "/health").json() == {"status": "ok"}


class StubBatch:
    """A decode batch whose every job ends at its first step with the engine's `reply(job)`."""

    def __init__(self, engine):
        self.engine, self.rows = engine, []

    def add(self, job):
        from tandem.serve import ChoiceEvent

        return {job: [ChoiceEvent(i, self.engine.reply(job), [], "length") for i in range(job.n)]}

    def step(self):
        return {}

    def remove(self, job):
        pass


class BlockingEngine:
    """Stands in for the model: each completion waits until released, so concurrency can be tested deterministically."""

    max_positions = 100
    mergeable = False

    def __init__(self):
        self.release, self.started = threading.Event(), threading.Event()
        self.tokenizer = type("T", (), {"chat_template": None, "__len__": lambda self: 10})()

    def prompt_ids(self, text):
        return [1, 2]

    def batch(self, max_rows):
        return StubBatch(self)

    def reply(self, job):
        self.started.set()
        self.release.wait(30)
        return "done"


def test_requests_beyond_the_concurrency_and_queue_limits_get_429(tmp_path):
    from tandem.serve import BackgroundServer, ServeConfig, create_app

    engine = BlockingEngine()
    config = ServeConfig(model=tmp_path, model_name="stub", max_concurrency=1, max_queue=0)
    with BackgroundServer(create_app(config, engine=engine)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        first = {}
        worker = threading.Thread(target=lambda: first.update(r=client.completions.create(model="stub", prompt="a", max_tokens=1)))
        worker.start()
        assert engine.started.wait(30)
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="stub", prompt="b", max_tokens=1)
        engine.release.set()
        worker.join(30)
        assert first["r"].choices[0].text == "done"
        assert client.completions.create(model="stub", prompt="c", max_tokens=1).choices[0].text == "done"


class FailingEngine(BlockingEngine):
    """Fails on the prompt "boom" (a bug or an out-of-memory inside generation), works otherwise."""

    def reply(self, job):
        if job.prompt_ids == [9]:
            raise RuntimeError("CUDA out of memory (simulated)")
        return "fine"

    def prompt_ids(self, text):
        return [9] if text == "boom" else [1]


def test_an_error_inside_generation_is_a_500_and_the_server_keeps_serving(tmp_path):
    from tandem.serve import BackgroundServer, ServeConfig, create_app

    with BackgroundServer(create_app(ServeConfig(model=tmp_path, model_name="stub"), engine=FailingEngine())) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.InternalServerError, match="out of memory"):
            client.completions.create(model="stub", prompt="boom", max_tokens=1)
        assert client.completions.create(model="stub", prompt="ok", max_tokens=1).choices[0].text == "fine"


@pytest.mark.parametrize("body, status, words", [
    ({"prompt": ["Review:"] * 17, "max_tokens": 1}, 400, "limit of 16"),
    ({"prompt": ["Review:"] * 16, "n": 4, "max_tokens": 64}, 400, "4096 generated tokens"),
    ({"prompt": "Review:", "seed": 2**64, "max_tokens": 1}, 400, "seed"),
    ({"prompt": "Review:", "response_format": "json", "max_tokens": 1}, 400, "response_format"),
])
def test_work_per_request_is_bounded_and_odd_fields_are_4xx(live_server, api_key, body, status, words):
    headers = {"Authorization": f"Bearer {api_key}"}
    response = httpx.post(live_server.url + "/v1/completions", json={"model": "tiny", **body}, headers=headers, timeout=60)
    assert response.status_code == status and words in response.json()["error"]["message"]
    deep = b'{"model": "tiny", "prompt": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    response = httpx.post(live_server.url + "/v1/completions", content=deep, headers=headers, timeout=60)
    assert 400 <= response.status_code < 500


def test_an_empty_api_key_is_refused(tiny_model_dir):
    from pydantic import ValidationError

    from tandem.serve import ServeConfig

    with pytest.raises(ValidationError, match="api_key"):
        ServeConfig(model=tiny_model_dir, api_key="")


def test_engine_vllm_without_vllm_is_a_one_line_error_with_the_pip_command(tiny_model_dir):
    import importlib.util

    from pydantic import ValidationError
    from typer.testing import CliRunner

    from tandem.cli import app
    from tandem.serve import ServeConfig

    with pytest.raises(ValidationError, match="unknown serve engine 'vlm'; choose one of: hf, vllm"):
        ServeConfig(model=tiny_model_dir, engine="vlm")
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    result = CliRunner().invoke(app, ["serve", "--model", str(tiny_model_dir), "--engine", "vllm"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("tandem serve: --engine vllm needs vLLM: pip install 'tandem[vllm]'")


def test_vllm_options_are_flags_of_the_vllm_engine_only(tiny_model_dir):
    from pydantic import ValidationError
    from typer.testing import CliRunner

    from tandem.cli import app
    from tandem.serve import ServeConfig

    config = ServeConfig(model=tiny_model_dir, engine="vllm", vllm_enforce_eager=True, vllm_max_model_len=512)
    assert config.vllm_options() == {"enforce_eager": True, "max_model_len": 512}
    assert ServeConfig(model=tiny_model_dir, engine="vllm").vllm_options() == {}
    with pytest.raises(ValidationError, match="--vllm-enforce-eager apply to --engine vllm, not --engine hf"):
        ServeConfig(model=tiny_model_dir, vllm_enforce_eager=True)
    result = CliRunner().invoke(app, ["serve", "--model", str(tiny_model_dir), "--vllm-max-model-len", "256"])
    assert result.exit_code != 0 and "--vllm-max-model-len apply to --engine vllm" in result.output
