"""The request handling of `tandem serve`, one step at a time, without a server or a model."""

import json

import pytest

from tandem.serve import ServeConfig, ServeError
from tandem.serve.app import ClientGone, ServedModel, serve_error_for
from tandem.serve.protocol import CompletionRequest
from tandem.serve.scheduler import RequestTimeout, ServerStopping


class ContextOf100:
    """What the request checks read from an engine: a 100-token context. The scheduler's thread makes a batch and,
    with nothing submitted, waits."""

    max_positions = 100
    tokenizer = None

    def batch(self, max_rows):
        return None


@pytest.fixture()
def served(tmp_path):
    config = ServeConfig(model=tmp_path, model_name="stub", max_tokens=50, max_request_tokens=120)
    served = ServedModel(config, ContextOf100())
    yield served
    served.scheduler.stop()


def completion_request(**fields):
    return CompletionRequest.model_validate({"model": "stub", "prompt": "x", **fields})


def refusal(call, *args, **kwargs) -> tuple[int, dict]:
    with pytest.raises(ServeError) as refused:
        call(*args, **kwargs)
    return refused.value.status, refused.value.body["error"]


def test_a_request_for_another_model_is_a_404_naming_the_served_one(served, tmp_path):
    status, error = refusal(served.parse_request, b'{"model": "gpt-9", "prompt": "hi"}', CompletionRequest)
    assert status == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    assert error["message"] == "model 'gpt-9' is not served here; this server serves 'stub'"
    by_path = json.dumps({"model": str(tmp_path), "prompt": "hi"}).encode()
    assert served.parse_request(by_path, CompletionRequest).model == str(tmp_path)


def test_a_prompt_that_fills_the_context_is_refused_and_one_that_leaves_room_gets_what_is_left(served):
    status, error = refusal(served.make_job, completion_request(max_tokens=10), list(range(95)), chat=False)
    assert status == 400 and error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    assert error["message"] == "the prompt has 95 tokens and the model's context is 100: no room for 10 more"
    assert refusal(served.make_job, completion_request(), list(range(100)), chat=True)[1]["param"] == "messages"
    assert served.make_job(completion_request(), list(range(95)), chat=False).max_tokens == 5


def test_the_work_of_one_request_is_capped(served):
    job = served.make_job(completion_request(max_tokens=40), [1, 2], chat=False)
    served.check_budget([job] * 3)
    status, error = refusal(served.check_budget, [job] * 4)
    assert status == 400 and error["param"] == "max_tokens" and "up to 160 generated tokens" in error["message"]


@pytest.mark.parametrize("failure, status", [(ClientGone(), 499), (RequestTimeout("late"), 504),
                                             (ServerStopping("stopping"), 503)])
def test_a_scheduler_failure_becomes_its_http_status(failure, status):
    assert serve_error_for(failure).status == status


def test_an_unexpected_failure_stays_itself_for_the_500_guard():
    error = RuntimeError("CUDA out of memory")
    assert serve_error_for(error) is error
