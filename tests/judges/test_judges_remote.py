"""The OpenAI-compatible judge client: against a fake server that misbehaves on purpose, and a live `tandem serve`."""

import asyncio
import math
import threading

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from tandem.judges import LocalJudge, OpenAIJudge
from tandem.serve import BackgroundServer, ServeConfig, create_app

PROMPTS = ["Review: the sequel"]
A, B = [" was superb."], [" was bland."]


def completion(content, logprobs=None):
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": logprobs,
                         "finish_reason": "stop"}]}


def fake_app():
    """Behaviour chosen by the requested model name; counts calls and the most requests in flight at once.
    "slow" answers only once `app.state.release_slow` is set."""
    app = FastAPI()
    app.state.calls, app.state.in_flight, app.state.max_in_flight = {}, 0, 0
    app.state.release_slow = threading.Event()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        model = body["model"]
        calls = app.state.calls[model] = app.state.calls.get(model, 0) + 1
        busy = model == "busy"  # in-flight counted for this model only (timed-out "slow" requests linger)
        app.state.in_flight += busy
        app.state.max_in_flight = max(app.state.max_in_flight, app.state.in_flight)
        try:
            if model == "slow":
                await asyncio.to_thread(app.state.release_slow.wait, 60)
            if model == "busy":
                await asyncio.sleep(0.1)
            if model == "down" or (model == "flaky" and calls <= 2):
                return JSONResponse({"error": {"message": "boom"}}, status_code=500)
            if model == "limited":
                return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"retry-after": "0"})
            if model == "refuses":
                return JSONResponse({"error": {"message": "bad request"}}, status_code=400)
            if model == "garbage":
                return PlainTextResponse("<html>502 proxy</html>")
            if model == "babble":
                return completion("Both are nice, hard to say.")
            if model == "nologprobs" and body.get("logprobs"):
                return JSONResponse({"error": {"message": "logprobs are not supported"}}, status_code=400)
            if model == "logprobs":
                tokens = [("Verdict", -0.1, []), (":", -0.1, []),
                          (" A", math.log(0.6), [(" A", math.log(0.6)), (" B", math.log(0.2)), ("A", math.log(0.1))])]
                content = [{"token": t, "logprob": lp, "top_logprobs": [{"token": a, "logprob": b} for a, b in top]}
                           for t, lp, top in tokens]
                return completion("Verdict: A", {"content": content})
            if model == "secret" and request.headers.get("authorization") != "Bearer s3cret":
                return JSONResponse({"error": {"message": "no key"}}, status_code=401)
            return completion("Verdict: B" if model == "text" else "Verdict: A")
        finally:
            app.state.in_flight -= busy

    return app


@pytest.fixture(scope="module")
def fake_server():
    app = fake_app()
    with BackgroundServer(app) as server:
        yield server, app


def judge(server, model, **options):
    options.setdefault("backoff", 0.01)
    return OpenAIJudge(server.url + "/v1", model, both_orders=False, **options)


def test_logprobs_are_read_at_the_label_token_and_renormalised(fake_server):
    server, _ = fake_server
    [verdict] = judge(server, "logprobs").compare(PROMPTS, A, B)
    assert verdict.method == "logprobs" and verdict.value == pytest.approx(0.7 / 0.9)


def test_text_is_parsed_when_there_are_no_logprobs(fake_server):
    server, _ = fake_server
    [verdict] = judge(server, "text").compare(PROMPTS, A, B)
    assert verdict.method == "text" and verdict.value == 0.0 and verdict.raw == "Verdict: B"


def test_a_server_rejecting_logprobs_is_asked_again_without(fake_server):
    server, app = fake_server
    client = judge(server, "nologprobs")
    assert client.compare(PROMPTS, A, B)[0].value == 1.0 and client.logprobs_supported is False
    assert app.state.calls["nologprobs"] == 2


def test_server_errors_are_retried_with_backoff(fake_server):
    server, app = fake_server
    assert judge(server, "flaky", max_retries=3).compare(PROMPTS, A, B)[0].value == 1.0
    assert app.state.calls["flaky"] == 3
    client = judge(server, "down", max_retries=2)
    [verdict] = client.compare(PROMPTS, A, B)
    assert verdict.reason == "server_error" and "after 3 attempts" in verdict.detail and app.state.calls["down"] == 3
    assert client.stats.unusable == {"server_error": 1}
    assert judge(server, "limited", max_retries=1).compare(PROMPTS, A, B)[0].reason == "rate_limited"


def test_client_errors_are_not_retried(fake_server):
    server, app = fake_server
    assert judge(server, "refuses").compare(PROMPTS, A, B)[0].reason == "client_error"
    assert app.state.calls["refuses"] == 1


def test_timeouts_are_bounded_and_reported(fake_server):
    server, app = fake_server
    try:  # the server answers no "slow" request before the verdict: the client gave up on its own
        [verdict] = judge(server, "slow", timeout=0.3, max_retries=1).compare(PROMPTS, A, B)
    finally:
        app.state.release_slow.set()
    assert verdict.reason == "timeout" and app.state.calls["slow"] == 2


@pytest.mark.parametrize("model, reason", [("garbage", "bad_response"), ("babble", "unparsable")])
def test_garbage_replies_are_unusable_with_the_raw_text_kept(fake_server, model, reason):
    server, _ = fake_server
    [verdict] = judge(server, model, on_unusable="neutral").compare(PROMPTS, A, B)
    assert verdict.reason == reason and verdict.value == 0.5 and verdict.raw


def test_concurrency_is_limited(fake_server):
    server, app = fake_server
    app.state.max_in_flight = 0
    verdicts = judge(server, "busy", max_concurrency=2).compare(PROMPTS * 6, A * 6, B * 6)
    assert all(v.value == 1.0 for v in verdicts) and app.state.max_in_flight == 2


def test_the_api_key_comes_from_the_environment(fake_server, monkeypatch):
    server, _ = fake_server
    assert judge(server, "secret", api_key_env="MY_JUDGE_KEY").compare(PROMPTS, A, B)[0].reason == "client_error"
    monkeypatch.setenv("MY_JUDGE_KEY", "s3cret")
    assert judge(server, "secret", api_key_env="MY_JUDGE_KEY").compare(PROMPTS, A, B)[0].value == 1.0


def test_unreachable_servers_are_connection_errors():
    client = OpenAIJudge("http://127.0.0.1:9/v1", "m", max_retries=0, timeout=2)
    assert client.score(PROMPTS, A)[0].reason == "connection_error"


def test_works_inside_a_running_event_loop(fake_server):
    server, _ = fake_server

    async def inside():
        return judge(server, "text").compare(PROMPTS, A, B)

    assert asyncio.run(inside())[0].value == 0.0


def test_a_live_tandem_serve_judge_agrees_with_the_local_judge(answering_judge_dir):
    local = LocalJudge(answering_judge_dir, both_orders=False).compare(PROMPTS * 2, A + B, B + A)
    with BackgroundServer(create_app(ServeConfig(model=answering_judge_dir, model_name="judge"))) as server:
        remote = OpenAIJudge(server.url + "/v1", "judge", both_orders=False, timeout=60)
        verdicts = remote.compare(PROMPTS * 2, A + B, B + A)
        both = OpenAIJudge(server.url + "/v1", "judge", timeout=60).compare(PROMPTS, A, B)
    for near, far in zip(local, verdicts):
        assert far.method == "logprobs" and far.raw.startswith("Verdict: A")
        assert far.value == pytest.approx(near.value, abs=0.01)
    assert both[0].value == pytest.approx(0.5, abs=0.02)
