"""`tandem serve`: registered with the CLI through `register(add_command)`."""

from __future__ import annotations

from tandem.serve.app import ServeConfig


def _run(config: ServeConfig) -> None:
    from tandem.generation.engines import EngineUnavailable
    from tandem.serve.runner import run_server

    try:
        run_server(config)
    except EngineUnavailable as error:  # the CLI's one-line error for a wrong setup, with the pip command
        raise ValueError(str(error)) from None


def register(add_command) -> None:
    add_command(
        "serve", ServeConfig, _run,
        "Serve a model directory over an OpenAI-compatible API (/v1/models, /v1/chat/completions, /v1/completions) "
        "with log-probs, streaming and stop strings; binds 127.0.0.1 by default (--engine hf or vllm).",
    )
