"""A live `tandem serve` on loopback (uvicorn in a background thread, a free port) serving the tiny model."""

import pytest

API_KEY = "test-key"


@pytest.fixture(scope="session")
def api_key():
    return API_KEY


@pytest.fixture(scope="session")
def live_server(tiny_model_dir):
    from tandem.serve import BackgroundServer, ServeConfig, create_app

    config = ServeConfig(model=tiny_model_dir, model_name="tiny", api_key=API_KEY, max_tokens=64, max_n=4,
                         max_body_bytes=8192, max_request_tokens=2048)
    with BackgroundServer(create_app(config)) as server:
        yield server


@pytest.fixture(scope="session")
def client(live_server, api_key):
    import openai

    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=api_key, max_retries=0, timeout=120)
