"""`tandem serve --engine vllm` against `--engine hf` on the tiny Llama: the same answers through the same server
(runs where vLLM is installed: `.ci/run` builds a second virtualenv with `tandem[vllm]`; elsewhere they skip)."""

import os

import pytest

from checks import require_vllm, wait_for

pytestmark = pytest.mark.vllm
require_vllm()  # skips where vLLM is missing; fails in .ci/run's vLLM stage

import json  # noqa: E402
import threading  # noqa: E402

import httpx  # noqa: E402
import openai  # noqa: E402
import torch  # noqa: E402

from tandem.models.loading import load_causal_lm, load_tokenizer  # noqa: E402
from tandem.serve import BackgroundServer, ServeConfig, create_app, load_engine  # noqa: E402

PROMPTS = ["Review: I watched the sequel with my sister and", "Review:", "Review: the film was", "Review: it"]
ENDS = PROMPTS[0]  # greedy picks " and" next: the model below ends it there (EOS)


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model, edited so EOS wins wherever " and" would (a random model never ends on its own)."""
    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    [word] = tokenizer.encode(" and", add_special_tokens=False)
    with torch.no_grad():  # tied embeddings: the output row of EOS (its input row too; no prompt holds it)
        model.get_output_embeddings().weight[tokenizer.eos_token_id] = model.get_output_embeddings().weight[word] * 1.05
    folder = tmp_path_factory.mktemp("tiny-ends")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def serve_config(folder, **options):
    return ServeConfig(model=folder, model_name="tiny", max_tokens=500, max_n=4, max_request_tokens=8000,
                       max_batch_rows=16, **options)


@pytest.fixture(scope="module")
def vllm_engine(model_dir):
    """One vLLM engine for the module (start-up is the slow part); fp32, as `hf`."""
    engine = load_engine(serve_config(model_dir, engine="vllm", vllm_enforce_eager=True, vllm_max_model_len=512))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def servers(model_dir, vllm_engine):
    """(hf, vllm) servers on the same model."""
    with BackgroundServer(create_app(serve_config(model_dir))) as hf, \
            BackgroundServer(create_app(serve_config(model_dir, engine="vllm"), engine=vllm_engine)) as vllm_server:
        yield hf, vllm_server


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)


def ask(server, **request):
    api = client(server)
    return (api.chat.completions if "messages" in request else api.completions).create(model="tiny", **request)


def both(servers, **request):
    """The same request to the hf and the vllm server."""
    return [ask(server, **request) for server in servers]


def test_greedy_completions_equal_those_of_hf(servers):
    hf, vllm_reply = both(servers, prompt=PROMPTS + [ENDS], max_tokens=12, temperature=0, n=2, logprobs=2)
    assert [c.text for c in vllm_reply.choices] == [c.text for c in hf.choices]
    assert [c.finish_reason for c in vllm_reply.choices] == [c.finish_reason for c in hf.choices]
    assert vllm_reply.usage == hf.usage
    for ours, theirs in zip(vllm_reply.choices, hf.choices):
        assert ours.logprobs.tokens == theirs.logprobs.tokens and ours.logprobs.text_offset == theirs.logprobs.text_offset
        assert ours.logprobs.token_logprobs == pytest.approx(theirs.logprobs.token_logprobs, abs=1e-4)
        for a, b in zip(ours.logprobs.top_logprobs, theirs.logprobs.top_logprobs):
            assert list(a) == list(b) and list(a.values()) == pytest.approx(list(b.values()), abs=1e-4)


def test_end_of_sequence_is_counted_not_shown(servers):
    hf, vllm_reply = both(servers, prompt=ENDS, max_tokens=30, temperature=0, logprobs=0)
    for reply in (hf, vllm_reply):
        assert reply.choices[0].text == "" and reply.choices[0].finish_reason == "stop"
        assert reply.usage.completion_tokens == 1 and reply.choices[0].logprobs.tokens == []
    hf_long, vllm_long = both(servers, prompt=ENDS, max_tokens=30, temperature=0, extra_body={"ignore_eos": True})
    assert vllm_long.choices[0].text == hf_long.choices[0].text and vllm_long.usage.completion_tokens == 30


def test_chat_completions_equal_those_of_hf(servers):
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Review the film."}]
    hf, vllm_reply = both(servers, messages=messages, max_tokens=8, temperature=0, logprobs=True,
                          top_logprobs=3)
    assert vllm_reply.choices[0].message.content == hf.choices[0].message.content
    assert vllm_reply.choices[0].finish_reason == hf.choices[0].finish_reason and vllm_reply.usage == hf.usage
    assert [t.token for t in vllm_reply.choices[0].logprobs.content] == [t.token for t in hf.choices[0].logprobs.content]
    assert all(len(t.top_logprobs) == 3 for t in vllm_reply.choices[0].logprobs.content)


def test_streaming_gives_the_same_text_in_chunks(servers):
    _, vllm_server = servers
    messages = [{"role": "user", "content": "Hi"}]
    whole = ask(vllm_server, messages=messages, max_tokens=10, temperature=0)
    chunks = list(ask(vllm_server, messages=messages, max_tokens=10, temperature=0, stream=True,
                      stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert len(chunks) > 3 and chunks[-1].usage == whole.usage
    streamed = ask(vllm_server, prompt=PROMPTS, max_tokens=6, temperature=0, stream=True, n=2)
    texts = [""] * 8
    for chunk in streamed:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    hf = ask(servers[0], prompt=PROMPTS, max_tokens=6, temperature=0, n=2)
    assert texts == [c.text for c in hf.choices]


def test_n_sampled_choices_are_seeded_and_top_k_is_honoured(servers):
    _, vllm_server = servers

    def sample(seed):
        reply = ask(vllm_server, prompt=PROMPTS[:2], n=3, max_tokens=8, temperature=1.0, top_p=0.9, seed=seed,
                    extra_body={"ignore_eos": True, "top_k": 50})
        assert reply.usage.completion_tokens == 2 * 3 * 8
        return [(c.index, c.text) for c in reply.choices]

    first = sample(5)
    assert [i for i, _ in first] == list(range(6)) and len({t for _, t in first}) == 6
    assert first == sample(5) and first != sample(6)
    greedy = ask(vllm_server, prompt=PROMPTS[1], max_tokens=8, temperature=0).choices[0].text
    for server in servers:  # top_k = 1 leaves only the likeliest token to draw
        reply = ask(server, prompt=PROMPTS[1], n=2, max_tokens=8, temperature=1.5, extra_body={"top_k": 1})
        assert [c.text for c in reply.choices] == [greedy] * 2


def test_stop_strings_cut_the_output_as_with_hf(servers):
    full = ask(servers[1], prompt=PROMPTS[2], max_tokens=16, temperature=0)
    text = full.choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    hf, vllm_reply = both(servers, prompt=PROMPTS[2], max_tokens=16, temperature=0, stop=[stop, "@@never@@"])
    assert vllm_reply.choices[0].text == hf.choices[0].text == text[: text.index(stop)]
    assert vllm_reply.choices[0].finish_reason == "stop" and vllm_reply.usage == hf.usage
    streamed = ask(servers[1], prompt=PROMPTS[2], max_tokens=16, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == text[: text.index(stop)]


def test_a_client_that_hangs_up_aborts_its_vllm_request(servers, vllm_engine):
    _, vllm_server = servers
    scheduler = vllm_server.server.config.app.state.scheduler
    cancelled = scheduler.stats.cancelled
    body = {"model": "tiny", "prompt": "Review:", "max_tokens": 500, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", vllm_server.url + "/v1/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                assert json.loads(line[6:])["choices"]
                assert vllm_engine.llm_engine.has_unfinished_requests()
                break
    assert wait_for(lambda: scheduler.stats.cancelled == cancelled + 1, seconds=20.0)
    # nothing decodes for a client that is gone (that the scheduler then stops stepping: test_serve_batching.py)
    assert wait_for(lambda: not vllm_engine.llm_engine.has_unfinished_requests(), seconds=20.0)


def test_timeouts_and_a_server_stopping_abort_the_vllm_requests(model_dir, vllm_engine):
    body = {"model": "tiny", "prompt": ["Review:"] * 4, "max_tokens": 500, "n": 4, "ignore_eos": True}  # 16 rows
    config = serve_config(model_dir, engine="vllm", request_timeout=0.2)
    with BackgroundServer(create_app(config, engine=vllm_engine)) as live:
        response = httpx.post(live.url + "/v1/completions", timeout=60, json=body)
        assert response.status_code == 504 and live.server.config.app.state.scheduler.stats.timed_out >= 1
        assert wait_for(lambda: not vllm_engine.llm_engine.has_unfinished_requests(), seconds=20.0)
    live = BackgroundServer(create_app(serve_config(model_dir, engine="vllm"), engine=vllm_engine))
    replies = []
    threading.Thread(target=lambda: replies.append(httpx.post(live.url + "/v1/completions", json=body, timeout=60)),
                     daemon=True).start()
    scheduler = live.server.config.app.state.scheduler
    assert wait_for(lambda: scheduler.stats.steps > 3, seconds=20.0)
    live.stop()
    assert wait_for(lambda: bool(replies), seconds=20.0) and replies[0].status_code == 503
    assert not vllm_engine.llm_engine.has_unfinished_requests()


ON_ANOTHER_THREAD = """
import sys, threading, torch
torch.set_num_threads(1)  # before anything else, as benchmarks/serve_load.py --torch-threads 1
from tandem.serve import ServeConfig, load_engine
from tandem.serve.engine import Job
engine = load_engine(ServeConfig(model=sys.argv[1], engine="vllm"), enforce_eager=True, max_model_len=128)

def decode():
    batch = engine.batch(8)
    batch.add(Job(engine.prompt_ids("Review: the film"), n=4, max_tokens=3, temperature=1.0))
    while batch.rows:
        batch.step()
    print("decoded")

thread = threading.Thread(target=decode)  # as the server's scheduler thread
thread.start()
thread.join()
"""


def test_a_batch_decodes_on_a_thread_other_than_the_engines(model_dir, tmp_path):
    """OpenMP keeps a thread count per thread; vLLM's CPU attention refused ("metadata->thread_num == thread_num")
    a scheduler thread that had not been given vLLM's. A fresh process: the failure needs a first thread count of 1."""
    import subprocess
    import sys

    script = tmp_path / "on_another_thread.py"
    script.write_text(ON_ANOTHER_THREAD)
    done = subprocess.run([sys.executable, str(script), str(model_dir)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert "decoded" in done.stdout, done.stderr[-3000:]
