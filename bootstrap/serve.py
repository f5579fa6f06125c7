"""``serve``: the pulled model behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

Order of work, cheapest failure first: the options are checked (binding to anything but loopback
needs an API key), ``pull`` must have completed, the address is bound (a port in use fails before
the model load), then the model is loaded the way ``smoke`` loads it and uvicorn serves on the
bound socket until Ctrl-C / SIGTERM (which also stop any generation in progress).

The API key is a secret: it is compared in constant time, never logged, printed or kept in a
``repr``. FastAPI and uvicorn are imported only here, when serving.
"""

from __future__ import annotations

import errno
import gc
import ipaddress
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from bootstrap import loader
from bootstrap.errors import ServeError, UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_QUEUE = 4
MAX_BODY_BYTES = 1024 * 1024
GRACEFUL_SHUTDOWN_S = 5
API_KEY_ENV = "LLAMA_BOOTSTRAP_API_KEY"


@dataclass(frozen=True)
class ServeOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port
    api_key: Optional[str] = field(default=None, repr=False)
    queue_size: int = DEFAULT_QUEUE  # requests that may wait while one generates
    max_body_bytes: int = MAX_BODY_BYTES


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_options(options: ServeOptions) -> None:
    """Refuse what must not run (exit 2): a non-loopback address without an API key, an empty key."""
    if options.api_key is not None and not options.api_key.strip():
        raise UsageError("--api-key is empty", argument="--api-key",
                         remedy=f"pass a non-empty key (or set {API_KEY_ENV})")
    if not is_loopback(options.host) and not options.api_key:
        raise UsageError(
            f"--host {options.host} can be reached from other machines; serving there needs --api-key",
            argument="--host",
            remedy=f"add --api-key KEY (or set {API_KEY_ENV}; clients send 'Authorization: Bearer KEY'), "
                   f"or keep the default --host {DEFAULT_HOST}")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve it ({exc.strerror})", argument="--host",
                         remedy=f"use an IP address of this machine, e.g. {DEFAULT_HOST}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let two servers share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(f"{where} is already in use", address=where,
                             remedy="choose another --port (--port 0 picks a free one) or stop the program using it"
                             ) from exc
        if exc.errno == errno.EACCES:
            raise ServeError(f"no permission to listen on {where}", address=where,
                             remedy="use a port above 1023, e.g. --port 8000") from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise UsageError(f"--host {host} is not an address of this machine", argument="--host",
                             remedy=f"use an IP address of this machine, e.g. {DEFAULT_HOST}") from exc
        raise ServeError(f"cannot listen on {where}: {exc.strerror or exc}", address=where) from exc
    return sock


def _import_server_libraries() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ServeError(f"cannot import the server libraries: {exc}",
                         remedy="install the pip layer: pip install --require-hashes -r requirements/<platform>.txt"
                         ) from exc


class Service:
    """A bound socket, the loaded model and the app. ``run()`` serves until ``stop()``, Ctrl-C or SIGTERM."""

    def __init__(self, engine: Any, app: Any, sock: socket.socket) -> None:
        self.engine, self.app, self.sock = engine, app, sock
        self._server: Any = None
        self._stop_early = False

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = self.sock.getsockname()[0]
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve (blocking). Ctrl-C / SIGTERM end it normally: it returns once the server has stopped."""
        import uvicorn

        engine = self.engine

        class _Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                # A stop asked for is a clean end (exit 0): unlike uvicorn's own handler, the signal is
                # not raised again after the shutdown. Generations in progress stop within a token.
                engine.cancel_all()
                if self.should_exit and sig == signal.SIGINT:
                    self.force_exit = True  # a second Ctrl-C: do not wait for open connections
                self.should_exit = True

        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off", http="h11",
                                ws="none", log_level="warning", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        self._server = _Server(config)
        # Everything loaded so far (torch, transformers, the model, the web stack: ~350k objects) lives
        # as long as the server: keep it out of the garbage collector's full passes, which would
        # otherwise pause a generation now and then (~0.3-0.8 s each here).
        gc.freeze()
        if self._stop_early:
            self._server.should_exit = True
        try:
            self._server.run(sockets=[self.sock])
        except KeyboardInterrupt:  # a Ctrl-C that arrived outside uvicorn's handler
            pass
        finally:
            gc.unfreeze()
            self.sock.close()

    def stop(self) -> None:
        """Ask the server to stop (from any thread); generations in progress are cancelled."""
        self._stop_early = True
        self.engine.cancel_all()
        if self._server is not None:
            self._server.should_exit = True

    @property
    def started(self) -> bool:
        return bool(self._server is not None and self._server.started)


def prepare(plan: Any, options: ServeOptions, log: Callable[[str], None] = lambda _: None) -> Service:
    """Check, bind, load and build the app; ``Service.run()`` then serves.

    Raises UsageError (exit 2), NotPulledError / ServeError / SmokeError (exit 1).
    """
    check_options(options)
    _import_server_libraries()
    request = loader.pulled_request(plan)
    sock = bind(options.host, options.port)
    try:
        loaded = loader.load(request, log)
        app, engine = build_app(plan, loaded, options, log)
    except BaseException:
        sock.close()
        raise
    return Service(engine, app, sock)


def build_app(plan: Any, loaded: Any, options: ServeOptions, log: Callable[[str], None] = lambda _: None):
    """(FastAPI app, Engine) for an already loaded model."""
    from bootstrap.serve_api import create_app
    from bootstrap.serve_engine import Engine

    engine = Engine(loaded, plan.manifest.smoke.template, model_id=plan.model_key, aliases=(plan.model.repo_id,),
                    queue_size=options.queue_size, log=log)
    app = create_app(engine, api_key=options.api_key, max_body_bytes=options.max_body_bytes,
                     owned_by=plan.model.repo_id.split("/")[0])
    return app, engine


def serve(plan: Any, options: ServeOptions, *, echo: Callable[[str], None] = lambda _: None,
          on_ready: Callable[[Service, str], None] = lambda _s, _l: None) -> str:
    """Serve until stopped; returns the log's path. ``on_ready(service, log_path)`` once it listens.

    Every request is logged (id, token counts, finish reason, time; never its text, never the key)
    to ``<state dir>/logs/serve-*.log`` and passed to ``echo``.
    """
    from bootstrap.state import close_log, open_log

    check_options(options)
    logger, log_path = open_log(plan.state_dir, "serve", secrets=[s for s in (options.api_key, plan.token) if s])

    def log(message: str) -> None:
        logger.info(message)
        echo(message)

    try:
        service = prepare(plan, options, log)
        logger.info(f"serving {plan.model_key} on {service.url}/v1 (queue {options.queue_size}, "
                    f"API key {'required' if options.api_key else 'not required'})")
        on_ready(service, str(log_path))
        service.run()
        log("server stopped")
    except BaseException:
        logger.exception("serve failed")
        raise
    finally:
        close_log(logger)
    return str(log_path)
