"""Serving: an OpenAI-compatible server for tandem and Hugging Face model directories (`tandem serve`).

    app = create_app(ServeConfig(model="runs/sft/model"))          # a FastAPI app
    with BackgroundServer(app) as server:                           # uvicorn on a background thread
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
"""

from tandem.serve.app import Admission, ServeConfig, ServeError, create_app, load_engine
from tandem.serve.engine import Choice, ChoiceEvent, Engine, TokenLogprob, first_stop, held_back
from tandem.serve.runner import BackgroundServer, free_port, run_server

__all__ = [
    "Admission",
    "BackgroundServer",
    "Choice",
    "ChoiceEvent",
    "Engine",
    "ServeConfig",
    "ServeError",
    "TokenLogprob",
    "create_app",
    "first_stop",
    "free_port",
    "held_back",
    "load_engine",
    "run_server",
]
