"""The OpenAI-compatible HTTP API of ``serve`` (FastAPI).

``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions`` (``stream`` with
server-sent events ending in ``data: [DONE]``) and ``GET /health``. Every error has OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``: 400 bad JSON or a request the model cannot
take, 401 missing/wrong key, 404 unknown model or path, 413 body too large, 422 a field that fails
validation, 429 queue full, 500 generation failed.

Imported only by :func:`bootstrap.serve.build_app` (FastAPI and pydantic are imported here, at
the top, because FastAPI reads the handlers' annotations): ``llama-bootstrap --help`` never loads them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from typing import Any, AsyncIterator, Dict, List, Literal, Optional, Union

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bootstrap.errors import ContextOverflowError, GenerationError, ServerBusyError
from bootstrap.generation import FINISH_CANCELLED, FINISH_STOP, Sampling, StopFilter
from bootstrap.serve_engine import Engine, Running, text_batches

MAX_STOP_STRINGS = 4
DEFAULT_TEMPERATURE = 1.0  # OpenAI's defaults when a request names none
DEFAULT_TOP_P = 1.0


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers


def error_body(message: str, type: str, param: Optional[str] = None, code: Optional[str] = None) -> Dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status,
                        headers=exc.headers)


# ------------------------------------------------------------------------------ request models


class ContentPart(BaseModel):
    type: str
    text: Optional[str] = None


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, List[ContentPart], None] = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model: str
    messages: List[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    stop: Union[str, List[str], None] = None
    seed: Optional[int] = Field(None, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[int] = None
    tools: Optional[List[Any]] = None


def _text_of(i: int, message: Message) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise ApiError(400, f"messages[{i}].content: only text parts are supported (got {part.type!r})",
                           param=f"messages[{i}].content")
        parts.append(part.text)
    return "".join(parts)


def _stops(stop: Union[str, List[str], None]) -> tuple:
    items = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
    if len(items) > MAX_STOP_STRINGS:
        raise ApiError(400, f"stop: at most {MAX_STOP_STRINGS} sequences", param="stop")
    return tuple(s for s in items if s)


async def _read_body(request: Request, limit: int) -> bytes:
    too_big = ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


async def _parse(request: Request, limit: int) -> ChatRequest:
    raw = await _read_body(request, limit)
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply") from None
    try:
        return ChatRequest.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        raise ApiError(422, f"{param or 'body'}: {first.get('msg', 'invalid')}", param=param,
                       code="invalid_value") from None


# ------------------------------------------------------------------------------ responses


def _usage(prompt: int, completion: int) -> Dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish(reason: str) -> str:
    return FINISH_STOP if reason == FINISH_CANCELLED else reason


class _Chunks:
    def __init__(self, request_id: str, model: str) -> None:
        self.id, self.model, self.created = request_id, model, int(time.time())

    def event(self, delta: Dict[str, Any], finish: Optional[str] = None, usage: Optional[Dict] = None) -> str:
        doc: Dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                               "model": self.model,
                               "choices": [] if usage else [{"index": 0, "delta": delta, "logprobs": None,
                                                             "finish_reason": finish}]}
        if usage:
            doc["usage"] = usage
        return "data: " + json.dumps(doc, ensure_ascii=False) + "\n\n"


async def _watch_disconnect(request: Request, running: Running) -> None:
    """Stop the generation as soon as the client closes the connection.

    Started before the response, so it also covers a streamed answer whose client left while it
    waited in the queue (its event stream may never be iterated). It ends by itself: once the
    response is complete the server reports the connection as done.
    """
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            if not running.done.is_set():
                running.abandon()
            return


def create_app(engine: Engine, *, api_key: Optional[str], max_body_bytes: int, owned_by: str) -> FastAPI:
    """The FastAPI application over ``engine``. ``api_key``: required as a Bearer token on /v1 when set."""
    app = FastAPI(title="llama-bootstrap", docs_url=None, redoc_url=None, openapi_url=None)
    key = api_key.encode("utf-8") if api_key else None
    started = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", None, kind),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        engine.log(f"internal error: {type(exc).__name__}: {exc}")
        return JSONResponse(error_body("internal server error; see the server's log", "server_error"),
                            status_code=500)

    async def require_key(request: Request) -> None:
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode("utf-8")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "missing API key: send the header 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given, key):
            raise ApiError(401, "incorrect API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def model_card() -> Dict[str, Any]:
        return {"id": engine.model_id, "object": "model", "created": started, "owned_by": owned_by}

    @app.get("/health")
    async def health() -> Dict[str, Any]:
        return engine.health()

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    async def list_models() -> Dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model:path}", dependencies=[Depends(require_key)])
    async def get_model(model: str) -> Dict[str, Any]:
        if not engine.knows(model):
            raise ApiError(404, f"the model {model!r} does not exist; this server has {engine.model_id!r}",
                           param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions", dependencies=[Depends(require_key)])
    async def chat_completions(request: Request) -> Any:
        body = await _parse(request, max_body_bytes)
        if not engine.knows(body.model):
            raise ApiError(404, f"the model {body.model!r} does not exist; this server has {engine.model_id!r}",
                           param="model", code="model_not_found")
        if body.n not in (None, 1):
            raise ApiError(400, "n: only 1 choice per request is supported", param="n")
        if body.tools:
            raise ApiError(400, "tools are not supported by this model", param="tools")
        messages = [(m.role, _text_of(i, m)) for i, m in enumerate(body.messages)]
        try:
            prepared = engine.prepare(messages, body.max_completion_tokens or body.max_tokens)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="messages") from None
        except ContextOverflowError as exc:
            raise ApiError(400, str(exc), param="messages", code="context_length_exceeded") from None
        temperature = DEFAULT_TEMPERATURE if body.temperature is None else body.temperature
        sampling = Sampling(max_new_tokens=prepared.max_new_tokens, temperature=temperature,
                            top_p=DEFAULT_TOP_P if body.top_p is None else body.top_p, seed=body.seed,
                            stop=_stops(body.stop))
        request_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        try:
            running = await engine.start(request_id, prepared, sampling, stream=body.stream,
                                         streamer_factory=(lambda: text_batches(engine.loaded.tokenizer))
                                         if body.stream else None)
        except ServerBusyError as exc:
            raise ApiError(429, str(exc), type="rate_limit_error", code="rate_limit_exceeded",
                           headers={"Retry-After": "1"}) from None
        chunks = _Chunks(request_id, engine.model_id)
        watcher = asyncio.ensure_future(_watch_disconnect(request, running))
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_stream(running, watcher, sampling, chunks, usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            outcome = await running.outcome()
        except GenerationError as exc:
            raise ApiError(500, str(exc), type="server_error") from None
        finally:
            watcher.cancel()
        return {"id": request_id, "object": "chat.completion", "created": chunks.created, "model": engine.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": outcome.text},
                             "logprobs": None, "finish_reason": _finish(outcome.finish_reason)}],
                "usage": _usage(outcome.prompt_tokens, outcome.completion_tokens)}

    return app


async def _stream(running: Running, watcher: Any, sampling: Sampling, chunks: _Chunks,
                  include_usage: bool) -> AsyncIterator[str]:
    """The server-sent events of one streamed answer; closing it (client gone) stops the generation."""
    shown = StopFilter(sampling.stop)
    try:
        yield chunks.event({"role": "assistant", "content": ""})
        assert running.job is not None
        async for piece in running.job.streamer:
            text = shown.feed(piece)
            if text:
                yield chunks.event({"content": text})
        try:
            outcome = await running.outcome()
        except GenerationError as exc:
            yield "data: " + json.dumps(error_body(str(exc), "server_error"), ensure_ascii=False) + "\n\n"
            return
        rest = shown.finish(outcome.ended_by_model)
        if rest:
            yield chunks.event({"content": rest})
        yield chunks.event({}, _finish(outcome.finish_reason))
        if include_usage:
            yield chunks.event({}, usage=_usage(outcome.prompt_tokens, outcome.completion_tokens))
        yield "data: [DONE]\n\n"
    finally:
        watcher.cancel()
        if not running.done.is_set():  # closed before the end: the client went away
            running.abandon()
