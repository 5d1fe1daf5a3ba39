"""The FastAPI application: routes, the request limits, errors as JSON, one log line per request.

``create_app(predictor, settings, model)`` builds it around a loaded predictor; ``server.serve`` runs it.
Every refusal is ``{"error": message, "error_type": kind}`` (text-embeddings-inference's shape): 413 for
too much (inputs, bytes), 422 for a body that is not a valid request, 415 for one not sent as JSON, 400
for one that cannot be read, 429 when too many inputs wait, 404 and 405 for other paths and methods.
Anything unexpected is logged with its traceback and answered 500 with a generic message: no traceback
reaches a client.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from texttune.serving.batching import MicroBatcher
from texttune.serving.errors import ServeError
from texttune.serving.page import CONTENT_SECURITY_POLICY, PAGE
from texttune.serving.schema import ErrorResponse, Health, Info, PredictRequest, PredictResponse, sequences
from texttune.serving.scoring import Scorer, Work
from texttune.serving.settings import Settings

logger = logging.getLogger("texttune.serve")


def error_response(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": kind}, status_code=status, headers=headers)


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A body that cannot be read (not UTF-8, a bad Content-Length)"},
    413: {"model": ErrorResponse, "description": "Too many inputs, or a body over the size limit"},
    415: {"model": ErrorResponse, "description": "The body is not sent as application/json"},
    422: {"model": ErrorResponse, "description": "Not a valid request: malformed JSON, wrong types, an empty "
                                                 "text or batch, an input too long without truncate"},
    429: {"model": ErrorResponse, "description": "Too many inputs are waiting for the model"},
    500: {"model": ErrorResponse, "description": "An internal error (details in the server log)"},
    503: {"model": ErrorResponse, "description": "Shutting down"},
}


def create_app(predictor, settings: Settings, model: str | Path, backend: str = "torch") -> FastAPI:
    scorer = Scorer(predictor, settings.max_batch_size)
    batcher = MicroBatcher(scorer, settings.max_batch_size, settings.max_wait_ms, settings.max_queued_inputs)
    info = _static_info(predictor, settings, model, backend, scorer.max_tokens)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        batcher.start()
        yield
        # uvicorn's graceful shutdown has already waited for open requests; whatever still waits runs now.
        await batcher.close()

    app = FastAPI(
        title="texttune serve",
        version=info["versions"]["texttune"],
        summary=f"Text classification with {info['model_name']} (text-embeddings-inference's /predict schema)",
        lifespan=lifespan,
    )

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS,
              summary="Scores of every label for one input or a batch")
    async def predict(body: PredictRequest, request: Request) -> Response:
        """Every label with its score, highest first. Scores are probabilities, softmax(logits / T) with
        T the run's fitted temperature (as ``texttune predict``), or logits with ``raw_scores``."""
        seqs, batch = sequences(body.inputs)
        request.state.inputs = len(seqs)
        if len(seqs) > settings.max_inputs:
            raise ServeError(413, "validation", f"{len(seqs)} inputs; at most {settings.max_inputs} per request "
                                                "(the server's --max-inputs)")
        work = Work(seqs, truncate=bool(body.truncate), raw_scores=body.raw_scores, batch=batch)
        outcome = await batcher.submit(work, len(seqs))
        if isinstance(outcome, ServeError):
            raise outcome
        # Serialised here: the rows are already plain lists of dicts, checked against the schema by the tests.
        content = outcome if batch else outcome[0]
        return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")

    @app.get("/health", response_model=Health, responses={503: ERRORS[503]}, summary="Ready to predict?")
    async def health() -> Any:
        if not batcher.alive:
            return error_response(503, "unhealthy", "unhealthy")
        return {"status": "ok"}

    @app.get("/info", response_model=Info, summary="The model, its labels, the limits, the batching so far")
    async def get_info() -> Any:
        return {**info, "stats": batcher.snapshot()}

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    app.state.batcher, app.state.scorer = batcher, scorer
    _add_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog)  # added last: the outermost, so it sees every answer, 413s included
    return app


def _static_info(predictor, settings: Settings, model: str | Path, backend: str,
                 max_tokens: int | None) -> dict[str, Any]:
    import torch
    import transformers

    from texttune.version import __version__

    path = Path(model).resolve()
    temperature = getattr(predictor, "temperature", None)
    versions = {"texttune": __version__, "torch": torch.__version__, "transformers": transformers.__version__}
    if backend == "onnx":
        try:
            import onnxruntime

            versions["onnxruntime"] = onnxruntime.__version__
        except ImportError:
            pass
    return {
        "model": str(path),
        "model_name": path.parent.name if path.name == "model" else path.name,
        "backend": backend,
        "device": str(predictor.device) if getattr(predictor, "device", None) is not None else None,
        "labels": list(predictor.label_names),
        "max_length": max_tokens,
        "temperature": float(temperature) if temperature else None,
        "scores": ("probabilities: softmax(logits / temperature), the run's fitted temperature (as texttune "
                   "predict); logits with raw_scores") if temperature else
                  "probabilities: softmax(logits) (no temperature was fitted); logits with raw_scores",
        "limits": {"max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms,
                   "max_inputs": settings.max_inputs, "max_body_bytes": settings.max_body_bytes,
                   "max_queued_inputs": settings.max_queued_inputs},
        "versions": versions,
    }


# --------------------------------------------------------------------------- errors as JSON


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(_request: Request, error: ServeError) -> JSONResponse:
        if error.status >= 500:
            logger.error("answered %d: %s", error.status, error.message)
        return error_response(error.status, error.kind, error.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type.lower():  # the body was not read as JSON
            return error_response(415, "validation", "send the body as JSON, with Content-Type: application/json "
                                                     f"(got {content_type[:80] or 'no Content-Type'})")
        return error_response(422, "validation", validation_message(error.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "validation")
        message = str(error.detail)
        if error.status_code == 400:  # FastAPI's answer to a body it cannot decode (not UTF-8)
            message = "the body cannot be read: send JSON encoded as UTF-8"
        return error_response(error.status_code, kind, message, headers=getattr(error, "headers", None))


def validation_message(errors: list[dict]) -> str:
    """pydantic's errors as one short sentence per problem; never the offending input itself."""
    parts = []
    for item in errors[:5]:
        loc = [str(part) for part in item.get("loc", ()) if part != "body"]
        kind = item.get("type", "")
        if kind == "json_invalid":
            where = f" at character {loc[0]}" if loc else ""
            parts.append(f"malformed JSON: {(item.get('ctx') or {}).get('error', 'cannot be parsed')}{where}")
        elif kind == "invalid_inputs":
            parts.append(str(item.get("msg")))
        elif not loc:  # the body itself
            parts.append('the body must be a JSON object like {"inputs": "a text"}' if kind != "missing"
                         else 'the body is empty; send a JSON object like {"inputs": "a text"}')
        elif kind == "extra_forbidden":
            parts.append(f"{'.'.join(loc)}: unknown field (the fields are inputs, truncate, raw_scores)")
        else:
            parts.append(f"{'.'.join(loc)}: {item.get('msg', 'invalid')}"[:200])
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more problems")
    return "; ".join(parts) or "not a valid request"


# --------------------------------------------------------------------------- ASGI middleware


class BodyLimit:
    """413 for a body over ``max_bytes``: at once from Content-Length, or once the streamed body (chunked,
    or a Content-Length that understates it) passes the limit. The body is read here and replayed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await error_response(400, "validation", "Content-Length is not a number")(scope, receive, send)
            if int(declared) > self.max_bytes:
                return await self._refuse(scope, receive, send, int(declared))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its whole body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send, None)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: waits for the disconnect, as the server's would

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, declared: int | None) -> None:
        size = f"is {declared:,} bytes" if declared is not None else "goes on past the limit"
        message = f"the request body {size}; at most {self.max_bytes:,} bytes (the server's --max-body-bytes)"
        # Connection: close, so the server does not wait to read the rest of a body nobody will use.
        await error_response(413, "validation", message, headers={"Connection": "close"})(scope, receive, send)


class AccessLog:
    """One line per request (method, path, status, inputs, ms); the catch-all for unexpected errors."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if status == 0:  # nothing sent yet: a generic answer, the details stay in the log
                status = 500
                await error_response(500, "backend", "internal server error; see the server's log")(
                    scope, receive, send)
        finally:
            inputs = state.get("inputs", "-")
            logger.info("%s %s %d inputs=%s %.1fms", scope.get("method"), scope.get("path"), status, inputs,
                        1000 * (time.perf_counter() - start))
