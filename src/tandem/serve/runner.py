"""Running the server: in the foreground (`tandem serve`), or on a background thread (tests, notebooks, judges).

    with BackgroundServer(create_app(ServeConfig(model="runs/sft/model", port=0))) as server:
        judge = OpenAIJudge(server.url + "/v1", "model")
"""

from __future__ import annotations

import os
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from tandem.serve.app import API_KEY_ENV, ServeConfig, create_app


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose next request's headers are not complete within `seconds`.

    uvicorn itself has no such timeout: a client that opens connections and sends its headers a byte
    at a time (slow-loris) would hold each connection open for ever.
    """

    class HeaderTimeoutProtocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            cycle = self.cycle
            self.loop.call_later(seconds, self._headers_overdue, cycle)

        def _headers_overdue(self, cycle) -> None:
            waiting = self.cycle is cycle and (cycle is None or cycle.response_complete)
            if waiting and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def uvicorn_config(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Config:
    """How tandem runs uvicorn: timeouts against slow or idle clients, and a stop within seconds even mid-generation."""
    config: ServeConfig | None = getattr(app.state, "config", None)
    header_timeout = config.header_timeout if config is not None else 10.0
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          http=header_timeout_protocol(header_timeout), timeout_graceful_shutdown=5,
                          timeout_keep_alive=5)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class BackgroundServer:
    """uvicorn serving `app` on a daemon thread; `url` is its root (http://host:port). Stop with `stop()` or `with`."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 startup_timeout: float = 30.0) -> None:
        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn_config(app, self.host, self.port, log_level))
        self.thread = threading.Thread(target=self.server.run, name=f"tandem-serve-{self.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + startup_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self.host}:{self.port} did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_server(config: ServeConfig) -> None:
    """Serve `config.model` in the foreground until interrupted."""
    app = create_app(config)
    name = config.model_name or config.model.name
    keyed = config.api_key is not None or bool(os.environ.get(API_KEY_ENV))
    print(f"tandem serve: {name} at http://{config.host}:{config.port}/v1"
          + (" (API key required)" if keyed else " (no API key)"), flush=True)
    if not keyed and config.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"tandem serve: warning: listening on {config.host} without an API key: anyone who can reach this "
              f"address can use the model (set ${API_KEY_ENV})", flush=True)
    uvicorn.Server(uvicorn_config(app, config.host, config.port, config.log_level)).run()
