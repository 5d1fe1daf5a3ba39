"""``texttune serve``: load the model, bind the socket, run uvicorn until SIGTERM or Ctrl-C.

Order matters for the messages: the model is loaded (a bad path is a one-line error) and warmed up,
then the address is bound (a port in use is a one-line error), then the server starts; /health answers
only once the model is ready. On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and waits for
the open requests (at most ``drain_timeout_s``), the batcher runs whatever still waits, and the process
exits 0.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import logging.config
import signal
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from texttune.errors import TexttuneError
from texttune.serving.settings import Settings  # noqa: F401  (texttune serve options; importable from here)

logger = logging.getLogger("texttune.serve")

BACKENDS = ("torch", "onnx")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The server's own log and uvicorn's, one format, to stderr.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": LOG_FORMAT}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "loggers": {
        "texttune.serve": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},  # AccessLog writes ours
    },
}


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8080, backend: str | None = None,
          settings: Settings | None = None, num_threads: int | None = None, drain_timeout_s: float = 30.0) -> None:
    """Serve ``model`` (a run directory, its model/ folder or an export) over HTTP until stopped."""
    _require("fastapi", "uvicorn")
    import uvicorn

    from texttune.serving.app import create_app

    settings = settings or Settings()
    settings.check()
    if backend is not None and backend not in BACKENDS:
        raise TexttuneError(f"--backend: expected one of {', '.join(BACKENDS)}, got '{backend}'")
    logging.config.dictConfig(LOG_CONFIG)
    if num_threads is not None:
        import torch

        torch.set_num_threads(num_threads)
    predictor = load_predictor(model, backend)
    app = create_app(predictor, settings, model, getattr(predictor, "backend", None) or backend or "torch")
    start = time.perf_counter()
    app.state.batcher.run_in_model_thread(app.state.scorer.warm_up, settings.max_batch_size)
    logger.info("model loaded: %d labels, max_length %s; warm-up %.0f ms", len(predictor.label_names),
                app.state.scorer.max_tokens or "none (raw texts)", 1000 * (time.perf_counter() - start))
    try:
        sock = _bind(host, port)
    except TexttuneError:
        app.state.batcher.stop_model_thread()
        raise
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", server_header=False,
                            timeout_graceful_shutdown=max(1, round(drain_timeout_s)))
    server = uvicorn.Server(config)
    bound_host, bound_port = sock.getsockname()[:2]
    logger.info("serving %s on http://%s:%d (page /, API docs /docs, schema /openapi.json); "
                "max batch %d inputs, max wait %g ms", model, bound_host, bound_port,
                settings.max_batch_size, settings.max_wait_ms)
    with _signals_end_quietly(server):
        server.run(sockets=[sock])
    logger.info("stopped")


def load_predictor(model: str | Path, backend: str | None = None):
    """``texttune.predict.load``; ``backend`` None lets it choose (onnx for an ONNX export, torch otherwise)."""
    from texttune.predict import load

    if backend is None:
        return load(model)
    if "backend" not in inspect.signature(load).parameters:  # a load from before the ONNX backend
        if backend == "torch":
            return load(model)
        raise TexttuneError(f"--backend {backend}: this texttune's predict.load has no backend option")
    return load(model, backend=backend)


def _require(*modules: str) -> None:
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise TexttuneError(f"texttune serve needs {' and '.join(missing)}: pip install 'texttune[serve]'")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise TexttuneError(f"{host}:{port}: cannot listen there ({error.strerror or error})") from None
    sock.set_inheritable(True)
    return sock


@contextmanager
def _signals_end_quietly(server):
    """uvicorn handles SIGTERM and SIGINT itself (graceful shutdown), then re-raises the signal it stopped
    on, for the handler that was there before it. That handler is this one: it only asks the server to
    stop (which also covers a signal arriving before uvicorn installed its own), so the command returns
    and exits 0 instead of being killed by the re-raised signal."""

    def stop(_signum, _frame) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
