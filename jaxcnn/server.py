"""The HTTP prediction service: a Starlette app whose requests share compiled calls.

    predictor = server.load_predictor("runs/digits_cnn/export")  # or a run's workdir
    app = server.create_app(predictor, server.Settings(max_batch=32, max_wait_ms=0))
    # uvicorn.run(app, ...); scripts/serve.py does this, with signals and one-line errors

Endpoints:
  POST /v1/predict   images as multipart files (field `file`, repeated) or JSON
                     {"images": ["<base64>", ...], "top_k": 3}; answers, in request order,
                     {"model": ..., "predictions": [{"top_k": [{"class", "index",
                     "probability"}, ...]}, ...]}
  GET  /v1/metadata  classes, image shape, the model's export facts, batching and limits
  GET  /healthz      {"status": "ok"}; 503 once shutting down

Every image is decoded by `serving.decode_image`, the decoder training uses, so a request sees
the pixels a training image would. Bad requests get a 4xx `{"error": "<one line>"}` and leave
the server as it was (the README's table lists the codes).

Requests share calls of the model through `batching.Batcher` (whose docstring says how and
why): requests that wait while the model is busy go in one call, padded to one of a few batch
sizes, every one of which is compiled before the app exists, so nothing compiles under load.

Serving an export imports only `jaxcnn.serving` (jax, numpy, Pillow) and `jaxcnn.batching`
(numpy) from jaxcnn; a run's workdir brings in `jaxcnn.inference` and `jaxcnn.export` (flax)
when, and only when, one is served.
"""

import asyncio
import base64
import binascii
import contextlib
import email.message
import json
import math
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jaxcnn import batching, serving
from jaxcnn.serving import ServingError

ENDPOINTS = "POST /v1/predict, GET /v1/metadata, GET /healthz"
JSON_BODY = 'JSON {"images": ["<base64 image file>", ...], "top_k": 3}'
MULTIPART_BODY = "multipart/form-data with each image file in a field named 'file'"


class Settings(NamedTuple):
    """How the server batches and what it accepts (scripts/serve.py's flags)."""
    max_batch: int = 32  # images per compiled call; buckets are powers of two up to it
    # How long the first waiting request waits for company. 0: the batch is what waited while
    # the model was busy (batching.py says why that is the default).
    max_wait_ms: float = 0.0
    batching: bool = True  # False: every request runs alone (still bucketed)
    max_images: int = 32  # images per request
    max_body_bytes: int = 8 * 2**20  # per request, checked from Content-Length and while reading
    # 16.7 MP (4096 x 4096) per image: a decoded RGB image of that size is 50 MB, a few times
    # what a worker should hold per request; training's own limit (2^26) is for local files.
    max_image_pixels: int = 2**24

    def check(self) -> "Settings":
        """These settings, or a ServingError naming the first one out of range."""
        limits = [("max_batch", 1, 4096), ("max_images", 1, 65536),
                  ("max_body_bytes", 1, 2**40), ("max_image_pixels", 1, 2**40)]
        for name, lo, hi in limits:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ServingError(f"--{name.replace('_', '-')} must be an integer from {lo} to "
                                   f"{hi}, got {v!r}")
        if not (isinstance(self.max_wait_ms, (int, float)) and math.isfinite(self.max_wait_ms)
                and 0 <= self.max_wait_ms <= 10_000):
            raise ServingError(f"--max-wait-ms must be a number from 0 to 10000, got "
                               f"{self.max_wait_ms!r}")
        return self


# ---------------------------------------------------------------- the model behind the server

class Predictor(NamedTuple):
    """A model the server can call: uint8 BxHxWxC -> float32 BxK probabilities, and its facts."""
    probabilities: Callable[[np.ndarray], np.ndarray]  # compiled once per batch size
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # H, W, C
    facts: dict  # name, source, export facts from model.json: shown by /v1/metadata


def load_predictor(path: str) -> Predictor:
    """The model of an export directory (model.json + model.jax_export, from scripts/export.py)
    or of a run's workdir or checkpoint. Anything else is a ServingError saying what to give."""
    if any(os.path.isfile(os.path.join(path, n)) for n in (serving.METADATA, serving.ARTIFACT)):
        return _from_export(path)
    if any(os.path.isdir(os.path.join(path, n)) for n in ("checkpoints", "state")):
        return _from_run(path)
    raise ServingError(f"{path} is neither an export directory ({serving.METADATA} and "
                       f"{serving.ARTIFACT}, written by scripts/export.py) nor a run's workdir "
                       "(with checkpoints/): give one of them")


def _from_export(path: str) -> Predictor:
    model = serving.load(path)
    meta = model.meta
    if meta.get("input_dtype", "uint8") != "uint8" or model.image_shape[-1] not in (1, 3):
        raise ServingError(f"{path} takes {meta.get('input_dtype')} images of shape "
                           f"{model.image_shape}: the server sends uint8 RGB or grey images")
    call = jax.jit(model.exported.call)
    facts = {k: meta.get(k) for k in ("exported_on", "platforms", "tta_level", "checkpoint",
                                       "step", "artifact_sha256")}
    facts.update(model=meta.get("model") or os.path.basename(os.path.abspath(path)),
                 source="export", exported_with_jax=meta.get("jax_version"))
    return Predictor(lambda x: np.asarray(call(x)["probabilities"]), model.class_names,
                     model.image_shape, facts)


def _from_run(path: str) -> Predictor:
    """The run's latest checkpoint through `export.inference_fn`: the computation an export of
    it would hold, jitted in this process."""
    from jaxcnn import export, inference  # flax: only a run's workdir needs it
    from jaxcnn.errors import UserError
    try:
        run = inference.load_run(path)
    except UserError as e:
        raise ServingError(str(e)) from None
    serve, cfg = export.inference_fn(run)
    call = jax.jit(serve)
    facts = {"model": run.config.model.name, "source": "run", "tta_level": cfg.tta_level,
             "checkpoint": run.meta.get("checkpoint"), "step": run.meta.get("step")}
    shape = tuple(int(d) for d in run.meta["image_shape"])
    return Predictor(lambda x: np.asarray(call(x)["probabilities"]), run.class_names, shape,
                     facts)


def warm_up(predictor: Predictor, batch_sizes: tuple[int, ...]) -> float:
    """Compile every batch size (seconds taken), so that nothing compiles while requests wait;
    a ServingError if the model fails on one or gives the wrong shape."""
    start = time.perf_counter()
    k = len(predictor.class_names)
    for b in batch_sizes:
        x = np.zeros((b, *predictor.image_shape), np.uint8)
        try:
            out = predictor.probabilities(x)
        except Exception as e:  # noqa: BLE001 - e.g. an artifact lowered for another platform
            first = (str(e).splitlines() or [type(e).__name__])[0][:300]
            raise ServingError(f"the model fails on a batch of {b} images "
                               f"({type(e).__name__}: {first}): export it for this "
                               f"machine's platform ({jax.default_backend()})") from None
        if out.shape != (b, k):
            raise ServingError(f"the model gives {out.shape} for {b} images, not ({b}, {k}): "
                               "export it again")
    return time.perf_counter() - start


# ---------------------------------------------------------------- reading a request

class BadRequest(Exception):
    """A request the server refuses: its HTTP status and one line saying what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Images(NamedTuple):
    blobs: list[bytes]  # the encoded image files, in request order
    names: list[str]  # how errors name each image
    top_k: object  # as sent (None: not sent); checked by _top_k


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused (413) from its Content-Length or as soon as it grows past `max_bytes`."""
    too_big = (f"the body is over the limit of {max_bytes:,} bytes: send fewer or smaller "
               "images per request")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(400, f"Content-Length {declared[:40]!r} is not a byte count")
        if int(declared) > max_bytes:
            raise BadRequest(413, too_big)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, too_big)
        chunks.append(chunk)
    return b"".join(chunks)


def _from_json(body: bytes, max_images: int) -> _Images:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
        raise BadRequest(400, f"the body is not valid JSON ({e}): send {JSON_BODY}") from None
    if not isinstance(doc, dict) or "images" not in doc:
        raise BadRequest(400, f"the JSON has no 'images' field: send {JSON_BODY}")
    unknown = sorted(set(doc) - {"images", "top_k"})
    if unknown:
        raise BadRequest(400, f"unknown field {unknown[0]!r}: the JSON fields are 'images' and "
                         "'top_k'")
    images = doc["images"]
    if not isinstance(images, list) or not all(isinstance(s, str) for s in images):
        raise BadRequest(400, f"'images' must be a list of base64 strings: send {JSON_BODY}")
    _check_count(len(images), max_images)
    blobs = []
    for i, text in enumerate(images):
        if text.startswith("data:") and "," in text:  # a data URL: data:image/png;base64,...
            text = text.split(",", 1)[1]
        try:
            blobs.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError) as e:
            raise BadRequest(400, f"images[{i}] is not valid base64 ({e}): encode each image "
                             "file's bytes as standard base64") from None
    return _Images(blobs, [f"images[{i}]" for i in range(len(blobs))], doc.get("top_k"))


async def _from_multipart(headers: Headers, body: bytes, top_k, max_images: int) -> _Images:
    # Counted before parsing: the parser would read every part of a request it will refuse.
    _check_count(_multipart_parts(headers, body), max_images)

    async def once():
        yield body

    parser = MultiPartParser(headers, once(), max_files=max_images, max_fields=max_images)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise BadRequest(400, f"the multipart body cannot be read ({e.message}): send "
                         f"{MULTIPART_BODY}") from None
    try:
        wrong = [k for k, v in form.multi_items() if k != "file" or not isinstance(v, UploadFile)]
        if wrong:
            raise BadRequest(400, f"field {wrong[0]!r} is not an image file named 'file': send "
                             f"{MULTIPART_BODY} (top_k goes in the query: ?top_k=3)")
        files = form.getlist("file")
        if not files:
            raise BadRequest(400, f"the request has no image: send {MULTIPART_BODY}")
        blobs = [await f.read() for f in files]
        names = [f"file {i} ({f.filename!r})" for i, f in enumerate(files)]
    finally:
        await form.close()
    return _Images(blobs, names, top_k)


def _multipart_parts(headers: Headers, body: bytes) -> int:
    """How many parts a multipart body holds, from its boundary lines (RFC 2046: CRLF--b)."""
    msg = email.message.Message()
    msg["content-type"] = headers.get("content-type", "")
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise BadRequest(400, f"the multipart Content-Type has no boundary: send "
                         f"{MULTIPART_BODY}")
    delimiter = b"--" + boundary.encode("latin-1")
    return body.count(b"\r\n" + delimiter) + body.startswith(delimiter) - 1


def _check_count(n: int, max_images: int) -> None:
    if n > max_images:
        raise BadRequest(413, f"{n} images in one request, more than the limit of {max_images}: "
                         "send them in several requests")
    if n < 1:
        raise BadRequest(400, "the request has no image: send at least one")


def _top_k(value, num_classes: int):
    """top_k as an int in 1..K (default min(3, K)), or a 422 naming the range."""
    if value is None:
        return min(3, num_classes)
    if isinstance(value, str) and len(value) <= 10:
        with contextlib.suppress(ValueError):
            value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= num_classes:
        raise BadRequest(422, f"top_k must be an integer from 1 to {num_classes} (the model's "
                         f"classes), got {str(value)[:40]!r}")
    return value


def _decode(images: _Images, predictor: Predictor, max_pixels: int) -> np.ndarray:
    """uint8 NxHxWxC: each image decoded as training decodes files, resized to the model's."""
    h, w, c = predictor.image_shape
    out_NxHxWxC = np.empty((len(images.blobs), h, w, c), np.uint8)
    for i, (blob, name) in enumerate(zip(images.blobs, images.names, strict=True)):
        try:
            out_NxHxWxC[i] = serving.decode_image(blob, (w, h), name=name, channels=c,
                                                  max_pixels=max_pixels,
                                                  limit_name="the server's --max-image-pixels",
                                                  fix="send a complete image file")
        except ServingError as e:
            raise BadRequest(422, str(e)) from None
    return out_NxHxWxC


# ---------------------------------------------------------------- the app

def create_app(predictor: Predictor, settings: Settings | None = None) -> Starlette:
    """The ASGI app serving `predictor`, its batch sizes compiled before this returns.

    `app.state.batcher` holds the batcher (its call counts), `app.state.warm_up_s` the
    compilation time. The batcher runs between the app's lifespan startup and shutdown; at
    shutdown it answers every waiting request before the worker stops.
    """
    settings = (settings or Settings()).check()
    batcher = batching.Batcher(predictor.probabilities, predictor.image_shape,
                               max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                               enabled=settings.batching)
    warm_up_s = warm_up(predictor, batcher.buckets)
    names = predictor.class_names

    async def predict(request: Request) -> JSONResponse:
        unknown = sorted(set(request.query_params) - {"top_k"})
        if unknown:
            raise BadRequest(400, f"unknown query parameter {unknown[0]!r}: the only one is "
                             "top_k")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/json", "multipart/form-data"):
            raise BadRequest(415, f"Content-Type {kind or '(none)'!r} is not accepted: send "
                             f"{JSON_BODY}, or {MULTIPART_BODY}")
        body = await _read_body(request, settings.max_body_bytes)
        if kind == "application/json":
            images = _from_json(body, settings.max_images)
            if images.top_k is None:
                images = images._replace(top_k=request.query_params.get("top_k"))
        else:
            images = await _from_multipart(request.headers, body,
                                           request.query_params.get("top_k"),
                                           settings.max_images)
        k = _top_k(images.top_k, len(names))
        images_NxHxWxC = await asyncio.to_thread(_decode, images, predictor,
                                                 settings.max_image_pixels)
        probs_NxK = await batcher.predict(images_NxHxWxC)
        return JSONResponse({"model": predictor.facts["model"],
                             "predictions": [{"top_k": row}
                                             for row in serving.top_k(probs_NxK, names, k)]})

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse({
            **predictor.facts, "classes": list(names),
            "image_shape": list(predictor.image_shape), "input": "image files (PNG, JPEG, ...: "
            "anything Pillow reads), decoded as in training and resized to image_shape",
            "jax_version": jax.__version__, "backend": jax.default_backend(),
            "batching": {"enabled": settings.batching, "max_batch": settings.max_batch,
                         "max_wait_ms": settings.max_wait_ms, "buckets": list(batcher.buckets),
                         "warm_up_s": round(warm_up_s, 3), "calls": batcher.calls,
                         "images": batcher.images, "padding": batcher.padding,
                         "queued_images": batcher.queued_images},
            "limits": {"max_images": settings.max_images,
                       "max_body_bytes": settings.max_body_bytes,
                       "max_image_pixels": settings.max_image_pixels},
        })

    async def healthz(request: Request) -> JSONResponse:
        if batcher.closing:
            return _error(503, "the server is shutting down: send requests to another instance")
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.close()

    app = Starlette(
        routes=[Route("/v1/predict", predict, methods=["POST"]),
                Route("/v1/metadata", metadata, methods=["GET"]),
                Route("/healthz", healthz, methods=["GET"])],
        exception_handlers={BadRequest: _bad_request, HTTPException: _http_error,
                            batching.ShuttingDown: _shutting_down, ClientDisconnect: _client_gone,
                            batching.ModelFailed: _model_failed, Exception: _internal_error},
        lifespan=lifespan)
    app.state.batcher, app.state.warm_up_s = batcher, warm_up_s
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


async def _bad_request(request: Request, e: BadRequest) -> JSONResponse:
    return _error(e.status, str(e))


async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
    """The router's own refusals (404 unknown path, 405 wrong method), in the same shape."""
    response = _error(e.status_code, f"{e.detail}: {request.method} {request.url.path} is not "
                      f"an endpoint; the endpoints are {ENDPOINTS}")
    response.headers.update(e.headers or {})
    return response


async def _shutting_down(request: Request, e: batching.ShuttingDown) -> JSONResponse:
    return _error(503, "the server is shutting down: send the request to another instance")


async def _client_gone(request: Request, e: ClientDisconnect) -> JSONResponse:
    return _error(400, "the client closed the connection before the body was complete")


async def _model_failed(request: Request, e: batching.ModelFailed) -> JSONResponse:
    return _error(500, f"the model failed ({e}): see the server's log")


async def _internal_error(request: Request, e: Exception) -> JSONResponse:
    """Anything else: a bug; Starlette logs its traceback after this answer."""
    first = (str(e).splitlines() or [""])[0][:300]
    return _error(500, f"the server failed ({type(e).__name__}: {first}): see its log")
