"""Serve a model over HTTP: `python scripts/serve.py RUN_OR_EXPORT [--port 8000]`.

RUN_OR_EXPORT is a directory written by scripts/export.py (model.json + model.jax_export:
served with jax, numpy and Pillow, through jaxcnn/serving.py) or a run's workdir (its latest
checkpoint, jitted in this process). Every batch size the server uses is compiled before it
listens; then it prints `serving ... on http://HOST:PORT` and answers POST /v1/predict,
GET /v1/metadata and GET /healthz (jaxcnn/server.py). `--port 0` takes a free port.

    python scripts/serve.py runs/digits_cnn/export --host 127.0.0.1 --port 8000 \
        [--max-batch 32] [--max-wait-ms 0] [--no-batching] [--max-images 32] \
        [--max-body-bytes 8388608] [--max-image-pixels 16777216]

Requests that wait while the model is busy share one call of up to `--max-batch` images;
`--max-wait-ms` would hold the first of them longer, and is 0 by default because a 5 ms wait
measured slower at 1 and 8 clients (jaxcnn/batching.py gives the figures).

SIGTERM (or Ctrl+C) stops accepting connections, finishes the requests in flight (at most
`--graceful-timeout-s`), then exits 0. Bad input (a path that is neither a run nor an export,
a flag out of range, a port in use) is one line on stderr and exit code 2.
"""

import os
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn import cli  # noqa: E402
from jaxcnn.errors import UserError  # noqa: E402


def main(argv: list[str]) -> int:
    from absl import app, flags
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("serving needs Starlette and uvicorn: pip install -e '.[deploy]'"
                        ) from None

    from jaxcnn import server
    from jaxcnn.serving import ServingError
    defaults = server.Settings()
    flags.DEFINE_string("host", "127.0.0.1", "address to listen on")
    flags.DEFINE_integer("port", 8000, "port to listen on (0: a free one, printed)")
    flags.DEFINE_integer("max_batch", defaults.max_batch, "images per compiled call; batch "
                         "sizes are the powers of two up to it")
    flags.DEFINE_float("max_wait_ms", defaults.max_wait_ms, "how long the first waiting "
                       "request waits for others to share its call; 0: a call takes what "
                       "arrived while the model was busy, which measured faster than a 5 ms "
                       "wait at 1 and 8 clients (results/loadtest-2026-11-29)")
    flags.DEFINE_bool("no_batching", False, "run every request alone (for comparison)")
    flags.DEFINE_integer("max_images", defaults.max_images, "images per request")
    flags.DEFINE_integer("max_body_bytes", defaults.max_body_bytes, "bytes per request body")
    flags.DEFINE_integer("max_image_pixels", defaults.max_image_pixels, "width x height per "
                         "image, checked before decoding")
    flags.DEFINE_integer("graceful_timeout_s", 30, "on SIGTERM, how long requests in flight "
                         "may take to finish")
    flags.DEFINE_bool("access_log", False, "log every request")
    flags.DEFINE_bool("debug", False, "show full tracebacks")
    app.define_help_flags()
    argv = [cli._underscored(a) if a.startswith("--") else a for a in argv]  # --max-batch
    args = flags.FLAGS(argv)[1:]
    F = flags.FLAGS
    if len(args) != 1:
        raise UserError(f"give exactly one export directory or run workdir, got {len(args)} "
                        "arguments: scripts/serve.py RUN_OR_EXPORT [--port 8000]")
    if not 0 <= F.port <= 65535 or F.graceful_timeout_s < 0:
        raise UserError(f"--port must be 0..65535 and --graceful-timeout-s >= 0, got {F.port} "
                        f"and {F.graceful_timeout_s}")
    try:
        settings = server.Settings(
            max_batch=F.max_batch, max_wait_ms=F.max_wait_ms, batching=not F.no_batching,
            max_images=F.max_images, max_body_bytes=F.max_body_bytes,
            max_image_pixels=F.max_image_pixels).check()
        sock = _listen(F.host, F.port)  # before loading: a port in use fails at once
        predictor = server.load_predictor(args[0])
        asgi = server.create_app(predictor, settings)
    except ServingError as e:
        raise UserError(str(e)) from None
    host, port = sock.getsockname()[:2]
    print(f"serving {predictor.facts['model']} ({predictor.facts['source']} {args[0]}, "
          f"{len(predictor.class_names)} classes, {'x'.join(map(str, predictor.image_shape))}) "
          f"on http://{host}:{port}: batching {'on' if settings.batching else 'off'}, batch "
          f"sizes {', '.join(map(str, asgi.state.batcher.buckets))} compiled in "
          f"{asgi.state.warm_up_s:.1f} s", flush=True)
    return _run(asgi, sock, F.graceful_timeout_s, F.access_log)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a UserError saying why not."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}): choose another "
                        "--host or --port") from None
    sock.set_inheritable(True)
    return sock


def _run(asgi, sock: socket.socket, graceful_timeout_s: int, access_log: bool) -> int:
    import uvicorn
    config = uvicorn.Config(asgi, lifespan="on", access_log=access_log, log_level="info",
                            timeout_graceful_shutdown=graceful_timeout_s)
    # uvicorn handles SIGTERM (a graceful shutdown), then raises it again with the handler it
    # found: this one, so that a shutdown asked for is exit code 0, not death by signal.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    cli.run(main)
