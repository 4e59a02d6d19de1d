"""The HTTP prediction service: endpoints, batching through the app, bad requests, shutdown,
the load test. The batcher on its own: tests/test_batching.py.

The fast set runs the app in process (Starlette's TestClient, httpx's ASGI transport) on a
tiny hand-made export: a linear layer over the pixels, exported with jax.export as
scripts/export.py exports (the same two files), so that every batch size compiles in
milliseconds. The slow set starts scripts/serve.py and scripts/loadtest.py as processes and
serves a trained run's workdir.
"""

import ast
import asyncio
import base64
import datetime
import hashlib
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import httpx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export as jax_export
from PIL import Image
from starlette.testclient import TestClient

from jaxcnn import batching, server, serving
from jaxcnn.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog", "bird")
SHAPE = (16, 16, 3)
LIMITS = dict(max_images=6, max_body_bytes=32_000, max_image_pixels=64 * 64)


def write_tiny_export(directory: pathlib.Path) -> None:
    """model.jax_export + model.json of a linear classifier over the pixels: 16x16x3, 3 classes."""
    w_DxK = np.random.default_rng(0).normal(0, 0.05, (int(np.prod(SHAPE)), len(CLASSES)))

    def serve(images_BxHxWxC):
        x_BxD = images_BxHxWxC.reshape(images_BxHxWxC.shape[0], -1).astype(jnp.float32) / 255
        logits_BxK = x_BxD @ w_DxK.astype(np.float32)
        return {"logits": logits_BxK, "probabilities": jax.nn.softmax(logits_BxK, axis=-1)}

    (b,) = jax_export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, *SHAPE), jnp.uint8)
    blob = bytes(jax_export.export(jax.jit(serve), platforms=("cpu",))(spec).serialize())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / serving.ARTIFACT).write_bytes(blob)
    (directory / serving.METADATA).write_text(json.dumps({
        "class_names": list(CLASSES), "image_shape": list(SHAPE), "input_dtype": "uint8",
        "artifact_sha256": hashlib.sha256(blob).hexdigest(), "model": "tiny-linear",
        "jax_version": jax.__version__, "exported_on": datetime.date.today().isoformat(),
        "platforms": ["cpu"]}))


def png(array_HxWxC: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array_HxWxC.squeeze()).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny export's directory, and five PNGs: 16x16 RGB, 24x20 RGB, 16x16 grey, 2 more."""
    d = tmp_path_factory.mktemp("tiny")
    write_tiny_export(d / "export")
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, s, dtype=np.uint8)
              for s in [(16, 16, 3), (20, 24, 3), (16, 16, 1), (16, 16, 3), (16, 16, 3)]]
    paths = []
    for i, a in enumerate(arrays):
        paths.append(d / f"img{i}.png")
        paths[-1].write_bytes(png(a))
    return d / "export", paths


@pytest.fixture(scope="module")
def predictor(tiny):
    return server.load_predictor(str(tiny[0]))


@pytest.fixture(scope="module")
def client(predictor):
    """The app with a small batch and small limits, started (lifespan) for the whole module."""
    app = server.create_app(predictor, server.Settings(max_batch=4, max_wait_ms=1, **LIMITS))
    with TestClient(app) as c:
        yield c


def _expected(tiny, paths, k):
    model = serving.load(str(tiny[0]))
    probs = serving.classify(model, serving.prepare(paths, model.image_shape))["probabilities"]
    return serving.top_k(probs, model.class_names, k)


def _multipart(paths):
    return [("file", (p.name, p.read_bytes(), "image/png")) for p in paths]


def _b64(paths):
    return [base64.b64encode(p.read_bytes()).decode() for p in paths]


def _close(got, want):
    assert [[r["index"] for r in row["top_k"]] for row in got] == \
        [[r["index"] for r in row] for row in want]
    assert [[r["class"] for r in row["top_k"]] for row in got] == \
        [[r["class"] for r in row] for row in want]
    np.testing.assert_allclose([[r["probability"] for r in row["top_k"]] for row in got],
                               [[r["probability"] for r in row] for row in want], atol=1e-6)


def test_predict_multipart_and_json_equal_serving_classify(client, tiny):
    paths = tiny[1]
    r = client.post("/v1/predict?top_k=2", files=_multipart(paths))
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "tiny-linear"
    _close(r.json()["predictions"], _expected(tiny, paths, 2))
    r = client.post("/v1/predict", json={"images": _b64(paths[:3]), "top_k": 1})
    assert r.status_code == 200, r.text
    _close(r.json()["predictions"], _expected(tiny, paths[:3], 1))
    data_url = "data:image/png;base64," + _b64(paths[1:2])[0]
    r = client.post("/v1/predict", json={"images": [data_url]})  # default top_k: 3
    _close(r.json()["predictions"], _expected(tiny, paths[1:2], 3))


def test_metadata_and_healthz(client, predictor):
    assert client.get("/healthz").json() == {"status": "ok"}
    m = client.get("/v1/metadata").json()
    assert m["classes"] == list(CLASSES) and m["image_shape"] == list(SHAPE)
    assert m["model"] == "tiny-linear" and m["source"] == "export"
    assert m["exported_with_jax"] == m["jax_version"] == jax.__version__
    assert m["exported_on"] == datetime.date.today().isoformat() and m["platforms"] == ["cpu"]
    assert m["batching"]["buckets"] == [1, 2, 4] and m["batching"]["max_batch"] == 4
    assert m["batching"]["enabled"] and m["limits"] == LIMITS


def _counting(predictor):
    """`predictor` whose calls append their batch size to the returned list."""
    sizes = []

    def probabilities(x):
        sizes.append(len(x))
        return predictor.probabilities(x)

    return predictor._replace(probabilities=probabilities), sizes


async def _concurrently(app, bodies: list[list]) -> list[httpx.Response]:
    """One request per body, all in flight at once, through the app's lifespan."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(c.post("/v1/predict", files=b) for b in bodies))


def test_concurrent_requests_share_one_call_and_each_gets_its_rows(predictor, tiny):
    counting, sizes = _counting(predictor)
    # a long wait: the four requests fill the batch long before it ends
    app = server.create_app(counting, server.Settings(max_batch=4, max_wait_ms=5000))
    assert sorted(sizes) == [1, 2, 4]  # warm-up: every bucket, before any request
    sizes.clear()
    paths = tiny[1][:4]
    start = time.perf_counter()
    responses = asyncio.run(_concurrently(app, [_multipart([p]) for p in paths]))
    assert time.perf_counter() - start < 4  # ran when full, not at the deadline
    assert sizes == [4]
    assert app.state.batcher.calls == 1 and app.state.batcher.images == 4
    for r, p in zip(responses, paths, strict=True):
        _close(r.json()["predictions"], _expected(tiny, [p], 3))


def test_a_failing_model_call_is_a_500_json_line_and_the_next_call_works(predictor):
    failures = []

    def probabilities(x):
        if failures:
            raise RuntimeError(failures.pop())
        return predictor.probabilities(x)

    app = server.create_app(predictor._replace(probabilities=probabilities),
                            server.Settings(max_batch=4))
    with TestClient(app, raise_server_exceptions=False) as c:
        failures.append("out of memory\nsecond line")
        r = c.post("/v1/predict", files=[("file", ("ok.png", ONE))])
        assert r.status_code == 500
        assert r.json() == {"error": "the model failed (RuntimeError: out of memory): see the "
                                     "server's log"}
        assert c.post("/v1/predict", files=[("file", ("ok.png", ONE))]).status_code == 200


def test_shutdown_answers_waiting_requests_then_refuses(predictor):
    app = server.create_app(predictor, server.Settings(max_batch=4, max_wait_ms=5000))
    batcher = app.state.batcher

    async def scenario():
        await batcher.start()
        waiting = asyncio.create_task(batcher.predict(np.zeros((1, *SHAPE), np.uint8)))
        while batcher.queued_images == 0:
            await asyncio.sleep(0.001)
        start = time.perf_counter()
        await batcher.close()  # does not wait out the 5 s: closing runs what waits
        assert time.perf_counter() - start < 2
        assert (await waiting).shape == (1, 3)
        with pytest.raises(batching.ShuttingDown):
            await batcher.predict(np.zeros((1, *SHAPE), np.uint8))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            for r in (await c.get("/healthz"),
                      await c.post("/v1/predict", files=[("file", ("ok.png", ONE))])):
                assert r.status_code == 503 and "shutting down" in r.json()["error"]

    asyncio.run(scenario())


def _image(shape, truncate=False):
    data = png(np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8))
    return data[:len(data) // 2] if truncate else data


def _files(*blobs, field="file"):
    return {"files": [(field, (f"x{i}.png", b, "image/png")) for i, b in enumerate(blobs)]}


def _chunks():
    for _ in range(40):
        yield b"x" * 1000


ONE = _image((16, 16, 3))
ONE_B64 = base64.b64encode(ONE).decode()
JSON = {"content-type": "application/json"}
# name: (method, path, request kwargs, status, a phrase of the error)
BAD = {
    "not_an_image": ("POST", "/v1/predict", _files(b"hello"), 422,
                     "cannot decode image file 0 ('x0.png')"),
    "truncated_image": ("POST", "/v1/predict", _files(ONE, _image((16, 16, 3), True)), 422,
                        "cannot decode image file 1"),
    "too_many_pixels": ("POST", "/v1/predict", _files(_image((80, 80, 3))), 422,
                        "6,400 pixels, more than the limit of 4,096"),
    "wrong_field": ("POST", "/v1/predict", _files(ONE, field="image"), 400,
                    "field 'image' is not an image file named 'file'"),
    "text_field": ("POST", "/v1/predict", {"data": {"top_k": "2"}, **_files(ONE)}, 400,
                   "field 'top_k' is not an image file"),
    "no_boundary": ("POST", "/v1/predict", {"content": b"--x\r\n", "headers": {
        "content-type": "multipart/form-data"}}, 400, "has no boundary"),
    "empty_multipart": ("POST", "/v1/predict", {"content": b"garbage", "headers": {
        "content-type": "multipart/form-data; boundary=abc"}}, 400, "no image"),
    "multipart_unreadable": ("POST", "/v1/predict", {"content": b"--abc\r\nContent-Disposition: "
                             b"form-data\r\n\r\nx\r\n--abc--\r\n", "headers": {
                                 "content-type": "multipart/form-data; boundary=abc"}}, 400,
                             "the multipart body cannot be read"),
    "json_no_images": ("POST", "/v1/predict", {"json": {"image": [ONE_B64]}}, 400,
                       "no 'images' field"),
    "json_unknown_field": ("POST", "/v1/predict", {"json": {"images": [ONE_B64], "topk": 2}},
                           400, "unknown field 'topk'"),
    "json_not_a_list": ("POST", "/v1/predict", {"json": {"images": ONE_B64}}, 400,
                        "must be a list of base64 strings"),
    "json_no_image": ("POST", "/v1/predict", {"json": {"images": []}}, 400, "no image"),
    "not_json": ("POST", "/v1/predict", {"content": b'{"images": [', "headers": JSON}, 400,
                 "not valid JSON"),
    "bad_base64": ("POST", "/v1/predict", {"json": {"images": [ONE_B64, "no!base64"]}}, 400,
                   "images[1] is not valid base64"),
    "too_many_files": ("POST", "/v1/predict", _files(*[ONE] * 7), 413,
                       "7 images in one request, more than the limit of 6"),
    "too_many_base64": ("POST", "/v1/predict", {"json": {"images": [ONE_B64] * 7}}, 413,
                        "7 images in one request"),
    "body_over_content_length": ("POST", "/v1/predict", {"content": b" " * 32_001,
                                                         "headers": JSON}, 413,
                                 "over the limit of 32,000 bytes"),
    "body_over_while_reading": ("POST", "/v1/predict", {"content": _chunks(), "headers": JSON},
                                413, "over the limit of 32,000 bytes"),
    "text_plain": ("POST", "/v1/predict", {"content": ONE, "headers": {
        "content-type": "text/plain"}}, 415, "Content-Type 'text/plain' is not accepted"),
    "no_content_type": ("POST", "/v1/predict", {"content": ONE}, 415, "'(none)'"),
    "top_k_zero": ("POST", "/v1/predict?top_k=0", _files(ONE), 422,
                   "top_k must be an integer from 1 to 3"),
    "top_k_over_classes": ("POST", "/v1/predict", {"json": {"images": [ONE_B64], "top_k": 4}},
                           422, "got '4'"),
    "top_k_word": ("POST", "/v1/predict?top_k=all", _files(ONE), 422, "got 'all'"),
    "top_k_float": ("POST", "/v1/predict", {"json": {"images": [ONE_B64], "top_k": 1.5}},
                    422, "got '1.5'"),
    "top_k_bool": ("POST", "/v1/predict", {"json": {"images": [ONE_B64], "top_k": True}},
                   422, "got 'True'"),
    "top_k_huge": ("POST", "/v1/predict?top_k=" + "9" * 5000, _files(ONE), 422, "got '9999"),
    "json_nested_deep": ("POST", "/v1/predict", {"content": b"[" * 30_000, "headers": JSON},
                         400, "not valid JSON"),
    "unknown_query": ("POST", "/v1/predict?topk=2", _files(ONE), 400,
                      "unknown query parameter 'topk'"),
    "unknown_path": ("GET", "/v1/predictions", {}, 404, "the endpoints are POST /v1/predict"),
    "wrong_method": ("GET", "/v1/predict", {}, 405, "GET /v1/predict is not an endpoint"),
}


def test_an_image_that_does_not_decode_is_named_and_asked_for_again(client):
    """Pillow names the BytesIO it read a request's bytes through: the 422 says what is wrong
    with the image instead, and what to send."""
    not_an_image = ("cannot decode image {}: not an image Pillow can read (PNG, JPEG, GIF, BMP, "
                    "TIFF, WebP, ...): send a complete image file")
    for kwargs, name in ((_files(b"hello"), "file 0 ('x0.png')"),
                         ({"json": {"images": [ONE_B64, "aGVsbG8="]}}, "images[1]")):
        r = client.post("/v1/predict", **kwargs)
        assert r.status_code == 422 and r.json() == {"error": not_an_image.format(name)}
    r = client.post("/v1/predict", **_files(_image((16, 16, 3), truncate=True)))
    error = r.json()["error"]
    assert r.status_code == 422 and "object at 0x" not in error and "BytesIO" not in error
    assert error.startswith("cannot decode image file 0 ('x0.png') (")
    assert error.endswith("): send a complete image file"), error


@pytest.mark.parametrize("name", BAD)
def test_a_bad_request_is_a_4xx_json_line_and_the_server_goes_on(client, name):
    method, path, kwargs, status, phrase = BAD[name]
    r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and "\n" not in body["error"], body
    assert phrase in body["error"], body["error"]
    assert client.get("/healthz").status_code == 200
    ok = client.post("/v1/predict", files=[("file", ("ok.png", ONE))])
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


def test_load_predictor_refuses_what_is_neither_a_run_nor_an_export(tmp_path):
    with pytest.raises(serving.ServingError, match="is neither an export directory"):
        server.load_predictor(str(tmp_path))
    (tmp_path / serving.METADATA).write_text("{}")  # half an export: serving.load says what
    with pytest.raises(serving.ServingError, match="model.jax_export does not exist"):
        server.load_predictor(str(tmp_path))


@pytest.mark.parametrize("field, value", [("max_batch", 0), ("max_images", 1.5),
                                          ("max_wait_ms", float("nan")), ("max_wait_ms", -1),
                                          ("max_body_bytes", True)])
def test_settings_out_of_range_are_refused(field, value):
    with pytest.raises(serving.ServingError, match=f"--{field.replace('_', '-')} must be"):
        server.Settings(**{field: value}).check()


def _imports(module: str) -> set[str]:
    """The names a jaxcnn module imports at module level, as `package.module.name`."""
    tree = ast.parse((REPO / "jaxcnn" / f"{module}.py").read_text())
    names = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    return names | {f"{n.module}.{a.name}" for n in tree.body if isinstance(n, ast.ImportFrom)
                    for a in n.names}


def test_serving_an_export_imports_nothing_of_jaxcnn_but_serving_and_batching():
    """An export needs no flax (a run's workdir imports it lazily), and the batcher no jax."""
    ours = ("jaxcnn", "flax", "optax", "orbax")
    got = {n for n in _imports("server") if n.split(".")[0] in ours}
    assert got == {"jaxcnn.batching", "jaxcnn.serving", "jaxcnn.serving.ServingError"}, got
    got = {n for n in _imports("batching") if n.split(".")[0] in (*ours, "jax")}
    assert got == set(), got


def _loadtest():
    sys.path.insert(0, str(REPO / "scripts"))
    import loadtest
    return loadtest


def test_loadtest_refuses_other_hosts_and_takes_nearest_rank_percentiles():
    loadtest = _loadtest()
    for url in ("http://example.com:8000", "http://10.0.0.1", "https://localhost:8000"):
        with pytest.raises(UserError, match="load-test only servers on this machine"):
            loadtest.parse(["--url", url, "--images", "x.png"])
    assert loadtest.parse(["--url", "http://localhost:1", "--images", "x"]).concurrency == [
        1, 8, 32]
    with pytest.raises(UserError, match="--requests must be from 1"):
        loadtest.parse(["--url", "http://127.0.0.1:1", "--images", "x", "--requests", "0"])
    values = [float(v) for v in range(1, 101)]
    assert [loadtest.percentile(values, p) for p in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert loadtest.percentile([3.0], 99) == 3.0 and loadtest.percentile([], 50) is None


# ---------------------------------------------------------------- processes (slow)

def _start(*args, timeout=180):
    """scripts/serve.py args on a free port, once listening: (process, base URL)."""
    proc = subprocess.Popen([sys.executable, "scripts/serve.py", *map(str, args), "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines or " on http://" not in lines[0]:
        proc.kill()
        pytest.fail(f"serve.py did not start: {proc.communicate(timeout=30)[1][-3000:]}")
    return proc, "http://" + lines[0].split(" on http://")[1].split(": ")[0]


@pytest.mark.slow
def test_serve_answers_then_finishes_the_request_in_flight_on_sigterm(tiny, tmp_path):
    export_dir, paths = tiny
    images = tmp_path / "images"
    images.mkdir()
    for p in paths[:4]:
        (images / p.name).write_bytes(p.read_bytes())
    # A 3 s wait: a lone request is still waiting in the batcher when SIGTERM comes.
    proc, url = _start(export_dir, "--max-batch", "4", "--max-wait-ms", "3000")
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.get("/healthz").json() == {"status": "ok"}
            assert c.get("/v1/metadata").json()["batching"]["buckets"] == [1, 2, 4]
            # full batches of 4 do not wait for the deadline
            lt = subprocess.run([sys.executable, "scripts/loadtest.py", "--url", url,
                                 "--images", str(images), "--concurrency", "4", "--requests",
                                 "16", "--seconds", "60", "--json", str(tmp_path / "lt.json")],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
            assert lt.returncode == 0, lt.stderr[-3000:]
            level = json.loads((tmp_path / "lt.json").read_text())["run"]["levels"][0]
            assert level["ok"] == 16 and level["errors"] == 0 and level["p99_ms"] > 0
            assert level["images_per_call"] > 1
            answer = {}

            def in_flight():
                answer["r"] = c.post("/v1/predict", files=_multipart(paths[:1]))

            t = threading.Thread(target=in_flight)
            t.start()
            deadline = time.monotonic() + 10
            while c.get("/v1/metadata").json()["batching"]["queued_images"] != 1:
                assert time.monotonic() < deadline, "the request never reached the batcher"
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            t.join(30)
            assert not t.is_alive() and answer["r"].status_code == 200
            assert len(answer["r"].json()["predictions"]) == 1
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err and "Application shutdown complete" in err
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_loadtest_compares_batching_on_and_off_with_servers_it_starts(tiny, tmp_path):
    export_dir, paths = tiny
    out = tmp_path / "compare.json"
    p = subprocess.run([sys.executable, "scripts/loadtest.py", "--serve", str(export_dir),
                        "--images", *map(str, paths), "--concurrency", "1,4", "--requests",
                        "12", "--seconds", "30", "--server-args", "--max-batch 4 --max-wait-ms 2",
                        "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(out.read_text())
    for mode, enabled in (("on", True), ("off", False)):
        (run,) = report["runs"][mode]  # one round
        assert run["exit_code"] == 0 and run["server"]["batching"]["enabled"] is enabled
        assert [lv["concurrency"] for lv in run["levels"]] == [1, 4]
        assert all(lv["errors"] == 0 and lv["ok"] == 12 for lv in run["levels"])
    assert report["runs"]["off"][0]["levels"][1]["images_per_call"] == 1
    assert report["table"] in p.stdout and report["machine"]["nproc"] == os.cpu_count()


@pytest.mark.slow
def test_bad_command_lines_are_one_line_and_exit_2(tiny, tmp_path):
    cases = {
        "neither": (["scripts/serve.py", str(tmp_path)], "is neither an export directory"),
        "max_batch": (["scripts/serve.py", str(tiny[0]), "--max-batch", "0"],
                      "--max-batch must be an integer from 1"),
        "wait": (["scripts/serve.py", str(tiny[0]), "--max-wait-ms", "nan"],
                 "--max-wait-ms must be a number"),
        "flag": (["scripts/serve.py", str(tiny[0]), "--max-batch", "many"], "see --help"),
        "host": (["scripts/loadtest.py", "--url", "http://example.com", "--images", "x"],
                 "load-test only servers on this machine"),
    }
    procs = {k: subprocess.Popen([sys.executable, *cmd], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
             for k, (cmd, _) in cases.items()}
    for k, p in procs.items():
        _, err = p.communicate(timeout=120)
        lines = err.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, (k, err)
        assert lines[0].startswith("error: ") and cases[k][1] in lines[0], (k, err)


@pytest.mark.slow
def test_a_runs_workdir_is_served_as_its_export_is(digits_run, tmp_path):
    from jaxcnn import export, inference
    workdir = str(digits_run[0])
    export.export_run(inference.load_run(workdir), str(tmp_path / "export"), platforms=("cpu",))
    images = load_digits_pngs(8)
    answers = {}
    for source, path in (("run", workdir), ("export", str(tmp_path / "export"))):
        predictor = server.load_predictor(path)
        assert predictor.facts["source"] == source and predictor.facts["tta_level"] == 2
        app = server.create_app(predictor, server.Settings(max_batch=8))
        with TestClient(app) as c:
            r = c.post("/v1/predict?top_k=10", files=[("file", (f"{i}.png", b))
                                                      for i, b in enumerate(images)])
            assert r.status_code == 200, r.text
            answers[source] = r.json()["predictions"]
    for run_row, export_row in zip(answers["run"], answers["export"], strict=True):
        assert [t["index"] for t in run_row["top_k"]] == [t["index"] for t in export_row["top_k"]]
        np.testing.assert_allclose([t["probability"] for t in run_row["top_k"]],
                                   [t["probability"] for t in export_row["top_k"]], atol=1e-5)


def load_digits_pngs(n: int) -> list[bytes]:
    from jaxcnn.data import load
    return [png(x) for x in load("digits").test_images[:n]]


def test_the_committed_load_test_tables_are_what_its_json_makes():
    """results/loadtest-2026-11-29: the README's tables, and BENCHMARKS.md's once it cites the
    files, are `compare_table` of the committed raw JSON."""
    loadtest = _loadtest()
    results = REPO / "results" / "loadtest-2026-11-29"
    benchmarks = (REPO / "BENCHMARKS.md").read_text()
    for name in ("cnn-wait5.json", "cnn-wait0.json"):
        report = json.loads((results / name).read_text())
        table = loadtest.compare_table(report["runs"]["on"], report["runs"]["off"])
        assert table == report["table"]
        rows = table.splitlines()[2:]
        docs = [(results / "README.md").read_text()]
        docs += [benchmarks] if f"loadtest-2026-11-29/{name}" in benchmarks else []
        for doc in docs:
            for row in rows:
                assert row in doc, f"{name}: a document lacks the row {row!r}"
