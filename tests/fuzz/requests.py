"""A seeded generator of malformed and hostile requests to `tandem serve`, and the rule each must keep.

Cases mutate a valid completions or chat request: a field of the wrong type or out of range (NaN,
negative, huge, empty), a prompt of odd shape (token ids out of the vocabulary, nested lists, empty),
malformed messages, a body that is not JSON or not an object or nested too deeply, a wrong method,
path, content type or key. The rule: the server answers within `TIMEOUT` seconds with 200 (the
mutation was harmless) or a 4xx whose body is OpenAI's error JSON with a message (naming the field
when one field was mutated), never a 5xx, a hang or a dropped connection; and afterwards it still
answers a good request. `tests/fuzz/test_fuzz_inputs.py` runs a few hundred, `benchmarks/fuzz_inputs.py requests` thousands.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import httpx

TIMEOUT = 30.0
VOCABULARY = 512
GOOD_COMPLETION = {"model": "tiny", "prompt": "Review: the film", "max_tokens": 3, "temperature": 0.0}
GOOD_CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
ODD_VALUES = [None, True, -1, 0, 2**64, -(2**63), 1e308, float("nan"), float("inf"), "", "abc", "3", [], [1, "a"],
              {}, {"a": 1}, "\x00", "\ud800" if False else "\u202e", "x" * 5000]


@dataclass
class RequestCase:
    name: str
    method: str = "POST"
    path: str = "/v1/completions"
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    param: str | None = None  # the field mutated: a 400 should name it


def _dumps(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def make_case(rng: random.Random, number: int) -> RequestCase:
    chat = rng.random() < 0.4
    base = dict(GOOD_CHAT if chat else GOOD_COMPLETION)
    path = "/v1/chat/completions" if chat else "/v1/completions"
    roll = rng.random()
    if roll < 0.55:  # one field gets an odd value
        names = ["model", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "logprobs",
                 "stream_options", "response_format", "best_of", "echo", "ignore_eos"]
        names += ["messages", "top_logprobs"] if chat else ["prompt"]
        name = rng.choice(names)
        value = rng.choice(ODD_VALUES)
        body = {**base, name: value}
        return RequestCase(f"{path} {name}={str(value)[:20]!r}", path=path, body=_dumps(body), param=name)
    if roll < 0.7 and not chat:  # prompts of odd shape
        prompt = rng.choice([[], [[]], [-1], [VOCABULARY], [VOCABULARY * 1000], [[1, 2], "a"], [[1, [2]]],
                             [1.5, 2], ["a"] * 17, [[1] * 3] * 17, "\x00" * 10, "\ufffd" * 100, [True, False]])
        return RequestCase(f"prompt={str(prompt)[:30]}", path=path, body=_dumps({**base, "prompt": prompt}), param="prompt")
    if roll < 0.8 and chat:  # malformed messages
        messages = rng.choice([[], [{}], [{"role": "user"}], [{"role": "wizard", "content": "hi"}],
                               [{"role": "user", "content": 5}], [{"role": "user", "content": [{"type": "image_url"}]}],
                               [{"role": "user", "content": [{"type": "text"}]}], "hi", [["user", "hi"]],
                               [{"role": "user", "content": "hi", "extra": {"deep": [1] * 3}}] * 300])
        return RequestCase(f"messages={str(messages)[:30]}", path=path, body=_dumps({**base, "messages": messages}),
                           param="messages")
    if roll < 0.9:  # bodies that are not a request
        body = rng.choice([b"", b"{", b"null", b"[]", b"3", b'"text"', b"\xff\xfe\x00", b"{" * 100,
                           b'{"model": "tiny", "prompt": ' + b"[" * 3000 + b"]" * 3000 + b"}",
                           b'{"model": "tiny", "prompt": "a", "prompt": 5}', _dumps({"prompt": "a"}),
                           b'{"model": "tiny", "prompt": "a", "max_tokens": 1e999}'])
        return RequestCase(f"body {body[:20]!r}", path=path, body=body)
    kind = rng.choice(["method", "path", "content-type", "key", "lowercase-bearer", "huge-header"])
    if kind == "method":
        return RequestCase("GET a POST route", method="GET", path=path)
    if kind == "path":
        return RequestCase("unknown path", path=rng.choice(["/v1/nope", "/v2/completions", "/../etc/passwd", "/%00"]),
                           body=_dumps(base))
    if kind == "content-type":
        return RequestCase("form content type", path=path, body=b"model=tiny&prompt=a",
                           headers={"content-type": "application/x-www-form-urlencoded"})
    if kind == "key":
        return RequestCase("wrong key", path=path, body=_dumps(base), headers={"authorization": rng.choice(
            ["Bearer wrong", "Bearer", "Basic abc", "", "Bearer " + "k" * 10000])})
    if kind == "lowercase-bearer":
        return RequestCase("lowercase bearer (accepted)", path=path, body=_dumps(base), headers={"authorization": "bearer KEY"})
    return RequestCase("huge header", path=path, body=_dumps(base), headers={"x-junk": "j" * 20000})


def run_case(case: RequestCase, url: str, key: str) -> tuple[str, str]:
    """('ok', status) when the rule holds, else (what broke, detail)."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    headers.update({k: v.replace("KEY", key) for k, v in case.headers.items()})
    try:
        response = httpx.request(case.method, url + case.path, content=case.body or None, headers=headers,
                                 timeout=TIMEOUT)
    except httpx.TimeoutException:
        return "hang", case.name
    except httpx.HTTPError as error:
        return "dropped", f"{type(error).__name__}: {error}"
    status = response.status_code
    if status >= 500:
        return "5xx", f"{status} {response.text[:300]}"
    if status == 200:
        return "ok", "200"
    if status == 431 or (status == 400 and case.name == "huge header"):  # h11 refuses oversized headers itself
        return "ok", str(status)
    try:
        error = response.json()["error"]
        message = error["message"]
    except (ValueError, KeyError, TypeError):
        return "not_openai_error", f"{status} {response.text[:200]}"
    if not message:
        return "no_message", str(status)
    if status == 400 and case.param and case.param not in message and error.get("param") != case.param:
        return "unnamed_field", f"{case.param}: {message[:200]}"
    return "ok", str(status)
