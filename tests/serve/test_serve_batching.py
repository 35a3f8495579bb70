"""Continuous batching in `tandem serve`: jobs decode together exactly as alone, abandoned work stops, slow clients are cut off."""

import http.client
import json
import socket
import threading

import httpx
import pytest
import torch

from tandem.models.loading import load_causal_lm, load_tokenizer
from tandem.serve import BackgroundServer, Engine, ServeConfig, create_app
from tandem.serve.engine import Job, add_events

from checks import wait_for


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir))


def decode_together(engine, jobs, join_at):
    """Run `jobs` in one batch, job k joining after `join_at[k]` steps; return each job's choices."""
    from tandem.serve.engine import Choice

    batch = engine.batch(max_rows=64)
    choices = {job: [Choice() for _ in range(job.n)] for job in jobs}
    step = 0
    pending = list(zip(join_at, jobs))
    while pending or batch.rows:
        for at, job in [p for p in pending if p[0] <= step]:
            pending.remove((at, job))
            for j, events in batch.add(job).items():
                add_events(choices[j], events)
        for j, events in batch.step().items():
            add_events(choices[j], events)
        step += 1
    return [choices[job] for job in jobs]


def test_jobs_joining_a_running_batch_decode_exactly_as_alone(engine):
    assert engine.mergeable
    prompts = ["Review: the film", "Review: a long and winding story about the sea and", "Review:", "Review: it"]
    jobs = [Job(engine.prompt_ids(p), n=n, max_tokens=m, temperature=0.0, logprobs=0)
            for p, n, m in zip(prompts, [1, 2, 1, 3], [12, 5, 9, 7])]
    together = decode_together(engine, jobs, join_at=[0, 2, 2, 6])
    for job, batched in zip(jobs, together):
        alone = engine.complete(job.prompt_ids, n=job.n, max_tokens=job.max_tokens, temperature=0.0, logprobs=0)
        assert [c.text for c in batched] == [c.text for c in alone]
        assert [c.finish_reason for c in batched] == [c.finish_reason for c in alone]
        for b, a in zip(batched, alone):
            assert [e.token_id for e in b.logprobs] == [e.token_id for e in a.logprobs]
            assert [e.logprob for e in b.logprobs] == pytest.approx([e.logprob for e in a.logprobs], abs=1e-4)


def test_a_seeded_job_samples_the_same_tokens_whatever_shares_its_batch(engine):
    mine = Job(engine.prompt_ids("Review: this comedy"), n=2, max_tokens=10, temperature=1.0, seed=11)
    others = [Job(engine.prompt_ids("Review: the plot"), n=3, max_tokens=4, temperature=1.0, seed=5),
              Job(engine.prompt_ids("Review: a"), n=1, max_tokens=10, temperature=0.7, top_p=0.9)]
    together = decode_together(engine, [others[0], mine, others[1]], join_at=[0, 1, 3])[1]
    alone = engine.complete(mine.prompt_ids, n=2, max_tokens=10, temperature=1.0, seed=11)
    assert [c.text for c in together] == [c.text for c in alone]


def test_finished_rows_leave_the_cache_and_padding_columns_are_cut(engine):
    batch = engine.batch(max_rows=8)
    short = Job(engine.prompt_ids("Review: a long and winding story about the sea"), max_tokens=2, temperature=0.0)
    batch.add(short)
    long = Job(engine.prompt_ids("Review:"), n=2, max_tokens=6, temperature=0.0)
    batch.add(long)
    assert len(batch.rows) == 3 and batch.mask.shape[1] == len(short.prompt_ids)
    batch.step()  # the short job's second (last) token
    assert [r.job for r in batch.rows] == [long, long]
    assert batch.mask.shape[1] == len(long.prompt_ids) + 1  # its prompt and the one token fed since
    assert batch.cache.get_seq_length() == batch.mask.shape[1] and bool(batch.mask.all())


@pytest.fixture()
def server(tiny_model_dir):
    config = ServeConfig(model=tiny_model_dir, model_name="tiny", max_tokens=400, max_request_tokens=4000, max_n=4,
                         header_timeout=0.5, body_timeout=0.5, request_timeout=60)
    with BackgroundServer(create_app(config)) as live:
        yield live


def complete(url, **body):
    return httpx.post(url + "/v1/completions", json={"model": "tiny", **body}, timeout=60)


def test_concurrent_requests_share_the_batch_and_a_short_one_is_not_stuck_behind_a_long_one(server):
    scheduler = server.server.config.app.state.scheduler
    finished, order = {}, []

    def ask(name, **body):
        response = complete(server.url, temperature=1.0, ignore_eos=True, **body)
        finished[name] = (response.status_code, response.json())
        order.append(name)

    # 4 prompts x n=4 = 16 rows, more than half of the 32-row batch: the request holds at most 16 at a time
    big = threading.Thread(target=ask, args=("big",), kwargs=dict(prompt=["Review:"] * 4, n=4, max_tokens=200))
    big.start()
    assert wait_for(lambda: scheduler.stats.steps >= 5)
    ask("short", prompt="Review: the", max_tokens=4, n=2)
    big.join(120)
    assert finished["short"][0] == finished["big"][0] == 200
    assert len(finished["big"][1]["choices"]) == 16 and finished["big"][1]["usage"]["completion_tokens"] == 16 * 200
    assert order == ["short", "big"]
    assert scheduler.stats.most_rows == 18  # the big request's half of the batch, and the short one's 2 rows


def stream_then_hang_up(url, tokens):
    with httpx.stream("POST", url + "/v1/completions", timeout=60,
                      json={"model": "tiny", "prompt": "Review:", "max_tokens": tokens, "stream": True,
                            "ignore_eos": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                return json.loads(line[6:])


def test_a_client_that_hangs_up_cancels_its_generation(server):
    scheduler = server.server.config.app.state.scheduler
    assert stream_then_hang_up(server.url, 400)["choices"]
    assert wait_for(lambda: scheduler.stats.cancelled == 1)
    steps = scheduler.stats.steps
    assert complete(server.url, prompt="Review:", n=2, max_tokens=3, ignore_eos=True).status_code == 200
    # nothing decodes for a client that is gone: its row has left the batch (2 rows decoded together, not 3) and
    # the only steps since are the new request's own 2 (its first token comes with its prompt)
    assert scheduler.stats.most_rows == 2 and scheduler.stats.steps == steps + 2 < 400
    steps = scheduler.stats.steps
    body = json.dumps({"model": "tiny", "prompt": "Review:", "max_tokens": 400, "ignore_eos": True}).encode()
    gone = raw_connection(server)  # the same without streaming: the client sends its request and leaves
    gone.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert wait_for(lambda: scheduler.stats.steps > steps)
    gone.close()
    assert wait_for(lambda: scheduler.stats.cancelled >= 2 and not scheduler.waiting), scheduler.stats
    assert complete(server.url, prompt="Review:", max_tokens=2).status_code == 200


def test_a_generation_past_the_request_timeout_is_stopped_with_504(tiny_model_dir):
    config = ServeConfig(model=tiny_model_dir, model_name="tiny", max_tokens=400, max_request_tokens=4000,
                         request_timeout=0.2)
    with BackgroundServer(create_app(config)) as live:
        response = complete(live.url, prompt="Review:", max_tokens=400, ignore_eos=True)
        assert response.status_code == 504 and "within 0.2 s" in response.json()["error"]["message"]
        assert live.server.config.app.state.scheduler.stats.timed_out == 1


def raw_connection(server):
    connection = socket.create_connection((server.host, server.port), timeout=10)
    return connection


def test_slow_clients_are_cut_off(server):
    slow_headers = raw_connection(server)  # uvicorn alone would keep it open past the socket's 10 s timeout
    slow_headers.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    assert slow_headers.recv(1024) == b""  # closed by the server
    silent = raw_connection(server)  # connects, says nothing
    assert silent.recv(1024) == b""
    slow_body = raw_connection(server)
    slow_body.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"model\": ")
    reply = slow_body.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408") and b"not received within 0.5 s" in reply
    assert complete(server.url, prompt="Review:", max_tokens=2).status_code == 200


def test_stopping_the_server_mid_generation_answers_503_at_once(tiny_model_dir):
    config = ServeConfig(model=tiny_model_dir, model_name="tiny", max_tokens=400, max_request_tokens=4000)
    live = BackgroundServer(create_app(config))
    scheduler = live.server.config.app.state.scheduler
    replies = []
    threading.Thread(target=lambda: replies.append(complete(live.url, prompt="Review:", n=2, max_tokens=400,
                                                            ignore_eos=True)), daemon=True).start()
    threading.Thread(target=lambda: stream_then_hang_up(live.url, 400), daemon=True).start()
    assert wait_for(lambda: scheduler.stats.most_rows >= 2)  # the 2 rows of the request that waits for its reply
    live.stop()
    # a 503 rather than the 400 tokens or a dropped connection after uvicorn's 5 s of graceful shutdown
    assert not live.thread.is_alive() and not scheduler._thread.is_alive()
    assert replies[0].status_code == 503 and "shutting down" in replies[0].json()["error"]["message"]


def test_sigterm_ends_tandem_serve_in_seconds_and_running_requests_get_503(tiny_model_dir):
    import signal
    import subprocess
    import sys

    from tandem.serve import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tandem.cli", "serve", "--model", str(tiny_model_dir), "--port",
                               str(port), "--model-name", "tiny", "--max-tokens", "500", "--max-request-tokens", "100000",
                               "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _answers(url), seconds=60)
        body = {"model": "tiny", "prompt": ["Review:"] * 8, "n": 8, "max_tokens": 500, "ignore_eos": True}
        client = post_once_handled(port, "/v1/completions", body)
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        # a 503 rather than 64 x 500 tokens or a dropped connection after uvicorn's 5 s of graceful shutdown
        reply = http.client.HTTPResponse(client)
        reply.begin()
        assert reply.status == 503 and "shutting down" in json.loads(reply.read())["error"]["message"]
        assert "Traceback" not in server.stdout.read()
    finally:
        server.kill()


def post_once_handled(port, path, body) -> socket.socket:
    """Send a request with `Expect: 100-continue`, its body only once the server asks for it: when this returns,
    the server is running the request's handler. Read the reply from the returned socket."""
    data = json.dumps(body).encode()
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
                       b"Content-Length: %d\r\n\r\n" % (path.encode(), len(data)))
    assert connection.recv(1024).startswith(b"HTTP/1.1 100 ")
    connection.sendall(data)
    return connection


def _answers(url):
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
