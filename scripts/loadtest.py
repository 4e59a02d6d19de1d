"""Load-test the prediction service on this machine: latency percentiles, throughput, errors.

    # a server already running (scripts/serve.py) on 127.0.0.1 or localhost:
    python scripts/loadtest.py --url http://127.0.0.1:8000 --images DIR [--concurrency 1,8,32]
    # or start scripts/serve.py with batching on, then off, on free ports, the same load each:
    python scripts/loadtest.py --serve RUN_OR_EXPORT --images DIR --json out.json

Each concurrency level keeps that many requests in flight (each client, on its own keep-alive
connection, sends its next request when the last is answered) until `--requests` have been
sent or `--seconds` have passed, after one request per client of warm-up, not counted.
Request bodies are the image files given (PNG, JPEG: what a client would send),
`--images-per-request` per request, as multipart (default) or base64 JSON, prepared once.
Reported per level: p50/p95/p99 latency (nearest rank over the answered requests), requests/s
and images/s (answered in the level's wall time), errors (anything but a 200 with one
prediction per image), and the server's mean images per compiled call. `--serve` mode adds
`--repeats` rounds and a table of medians (min-max). The client shares the machine with the
server: on few cores it takes CPU from it.

Only 127.0.0.1 and localhost are accepted: this is not a tool for other people's servers.
"""

import argparse
import asyncio
import base64
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn import cli  # noqa: E402
from jaxcnn.errors import UserError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_HOSTS = ("127.0.0.1", "localhost")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class Body(NamedTuple):
    content: bytes  # the request body
    content_type: str
    images: int


# ---------------------------------------------------------------- request bodies

def image_files(paths: list[str], limit: int) -> list[str]:
    """Image files from files and directories (their images, sorted), at most `limit`."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, n) for n in os.listdir(p)
                          if n.lower().endswith(IMAGE_SUFFIXES))
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise UserError(f"--images {p} is neither a file nor a directory: check the path")
    if not out:
        raise UserError(f"no image files in --images {' '.join(paths)}: give PNG or JPEG files "
                        "or a directory of them")
    return out[:limit]


def bodies(files: list[str], per_request: int, fmt: str) -> list[Body]:
    """One body per starting file, the next `per_request` files (cyclic) in each."""
    import httpx
    blobs = []
    for f in files:
        with open(f, "rb") as fh:
            blobs.append((os.path.basename(f), fh.read()))
    out = []
    for i in range(len(blobs)):
        chosen = [blobs[(i + j) % len(blobs)] for j in range(per_request)]
        if fmt == "json":
            content = json.dumps({"images": [base64.b64encode(b).decode() for _, b in chosen]})
            out.append(Body(content.encode(), "application/json", per_request))
        else:  # httpx's own multipart encoder, once, not per request
            req = httpx.Request("POST", "http://127.0.0.1/", files=[("file", c) for c in chosen])
            out.append(Body(req.read(), req.headers["content-type"], per_request))
    return out


def http_request(body: Body, host: str, port: int) -> bytes:
    """The whole HTTP/1.1 request for `body`: sent as is, again and again."""
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: "
            f"{body.content_type}\r\nContent-Length: {len(body.content)}\r\n\r\n")
    return head.encode("latin-1") + body.content


class Connection:
    """One keep-alive HTTP/1.1 connection sending prepared requests.

    Not httpx: on a 2-core machine its AsyncClient's CPU per request grew with the number of
    connections until, at 32, it cost more than the server's own work, and the load test
    measured itself. This is a write, then the response's head and Content-Length bytes."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        """(status, body) of one request; any failure closes the connection and raises."""
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
            fields = head.decode("latin-1").lower().split("\r\n")
            length = next((int(f.split(":", 1)[1]) for f in fields
                           if f.startswith("content-length:")), None)
            if length is None:
                raise ValueError("a response without Content-Length")
            body = await self.reader.readexactly(length)
            if "connection: close" in fields:
                self.close()
            return int(fields[0].split()[1]), body
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# ---------------------------------------------------------------- one level of load

def percentile(sorted_ms: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not sorted_ms:
        return None
    return sorted_ms[max(0, math.ceil(p / 100 * len(sorted_ms)) - 1)]


async def run_level(host: str, port: int, load: list[bytes], images_per_request: int,
                    concurrency: int, requests: int, seconds: float, timeout: float,
                    base_url: str) -> dict:
    """`concurrency` clients in a closed loop, each on its own connection, bounded by
    `requests` and `seconds`."""
    latencies_ms, errors, samples = [], 0, []
    sent = 0

    async def one(conn: Connection, raw: bytes) -> str | None:
        try:
            async with asyncio.timeout(timeout):
                status, body = await conn.send(raw)
        except Exception as e:  # noqa: BLE001 - any failure is an error counted, not a crash
            return f"{type(e).__name__}: {e}"[:200]
        if status != 200:
            return f"{status}: {body[:200].decode('utf-8', 'replace')}"
        try:
            got = len(json.loads(body)["predictions"])
        except (ValueError, KeyError, TypeError):
            return f"200 without predictions: {body[:200].decode('utf-8', 'replace')}"
        return None if got == images_per_request else f"{got} predictions, not {images_per_request}"

    async def client_loop(conn: Connection) -> None:
        nonlocal sent, errors
        while sent < requests and time.perf_counter() < deadline:
            raw = load[sent % len(load)]
            sent += 1
            start = time.perf_counter()
            error = await one(conn, raw)
            if error is None:
                latencies_ms.append((time.perf_counter() - start) * 1000)
            else:
                errors += 1
                if len(samples) < 5:
                    samples.append(error)

    conns = [Connection(host, port) for _ in range(concurrency)]
    # warm-up, not counted: opens each connection
    await asyncio.gather(*(one(c, load[0]) for c in conns))
    before = await _server_counts(base_url)
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(client_loop(c) for c in conns))
    wall_s = time.perf_counter() - start
    after = await _server_counts(base_url)
    for c in conns:
        c.close()
    calls = max(0, after["calls"] - before["calls"])
    per_call = (after["images"] - before["images"]) / calls if calls else None
    ok = len(latencies_ms)
    latencies_ms.sort()
    return {
        "concurrency": concurrency, "sent": sent, "ok": ok, "errors": errors,
        "error_samples": samples, "seconds": round(wall_s, 3),
        "requests_per_s": round(ok / wall_s, 2),
        "images_per_s": round(ok * images_per_request / wall_s, 2),
        **{f"p{p}_ms": _round(percentile(latencies_ms, p)) for p in (50, 95, 99)},
        "mean_ms": _round(sum(latencies_ms) / ok if ok else None),
        "max_ms": _round(latencies_ms[-1] if ok else None),
        "server_calls": calls,
        "images_per_call": _round(per_call),
    }


def _round(v):
    return None if v is None else round(v, 3)


async def _server_counts(base_url: str) -> dict:
    """The server's call and image counts (zeros if it cannot say: the level's errors will)."""
    try:
        return (await _metadata(base_url))["batching"]
    except (UserError, KeyError):
        return {"calls": 0, "images": 0}


async def _metadata(base_url: str) -> dict:
    import httpx
    try:
        async with httpx.AsyncClient() as client:
            r = await client.get(base_url + "/v1/metadata", timeout=30)
            return r.raise_for_status().json()
    except (httpx.HTTPError, ValueError) as e:
        raise UserError(f"cannot read {base_url}/v1/metadata ({type(e).__name__}: {e}): "
                        "start scripts/serve.py there, or fix --url") from None


async def run_levels(base_url: str, load: list[Body], args) -> dict:
    base_url = base_url.rstrip("/")
    u = urllib.parse.urlsplit(base_url)
    host, port = u.hostname, u.port or 80
    server = await _metadata(base_url)
    raw = [http_request(b, host, port) for b in load]
    levels = []
    for c in args.concurrency:
        levels.append(await run_level(host, port, raw, load[0].images, c, args.requests,
                                      args.seconds, args.timeout, base_url))
        print(_level_line(levels[-1]), flush=True)
    return {"url": base_url, "server": server, "levels": levels}


def _level_line(lv: dict) -> str:
    return (f"  concurrency {lv['concurrency']:>3}: {lv['requests_per_s']:>8.1f} req/s "
            f"{lv['images_per_s']:>8.1f} img/s  p50 {lv['p50_ms']} ms  p95 {lv['p95_ms']} ms  "
            f"p99 {lv['p99_ms']} ms  errors {lv['errors']}/{lv['sent']}  images/call "
            f"{lv['images_per_call']}")


# ---------------------------------------------------------------- servers started here

def start_server(path: str, extra: list[str], timeout_s: float) -> tuple[subprocess.Popen, str]:
    """scripts/serve.py on a free port of 127.0.0.1, once it listens; (process, base URL).

    Its log goes to a temporary file, not a pipe nobody reads while it serves."""
    cmd = [sys.executable, os.path.join(REPO, "scripts", "serve.py"), path, "--host",
           "127.0.0.1", "--port", "0", *extra]
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    found = re.search(r" on (http://127\.0\.0\.1:\d+)", lines[0] if lines else "")
    if not found:
        if not reader.is_alive():  # its stdout closed: it is exiting
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        why = (f"exited with code {proc.poll()}" if proc.poll() is not None
               else f"did not listen within {timeout_s} s")
        stop_server(proc, timeout_s=0)
        log.seek(0)
        err = log.read().strip().splitlines()
        raise UserError(f"scripts/serve.py {path} {' '.join(extra)} {why} "
                        f"({err[-1] if err else 'no error message'})")
    log.close()  # the server keeps writing to it; only a failed start reads it
    print(lines[0].strip(), flush=True)
    return proc, found.group(1)


def stop_server(proc: subprocess.Popen, timeout_s: float = 60) -> int:
    """SIGTERM, then its exit code (killed after `timeout_s`: -9)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    return proc.returncode


def compare(path: str, load: list[Body], args) -> dict:
    """The same load against batching on and off, each time a fresh server, for `--repeats`
    rounds; the order alternates (on, off; off, on; ...) so that neither always goes first
    on a machine whose load drifts."""
    runs = {"on": [], "off": []}
    extra = shlex.split(args.server_args)
    for i in range(args.repeats):
        order = (("on", []), ("off", ["--no-batching"]))
        for name, flag in order if i % 2 == 0 else order[::-1]:
            load_average = list(os.getloadavg())
            proc, url = start_server(path, extra + flag, args.startup_s)
            try:
                run = asyncio.run(run_levels(url, load, args))
            finally:
                code = stop_server(proc)
            runs[name].append({**run, "round": i, "load_average_at_start": load_average,
                               "exit_code": code})
    return runs


def compare_table(on: list[dict], off: list[dict]) -> str:
    """Per concurrency: medians over the rounds, (min-max) when there are several."""
    rows = ["| concurrency | on: req/s | off: req/s | on/off | on: p99 ms | off: p99 ms | "
            "on: p50 ms | off: p50 ms | on: images/call | errors on/off |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, c in enumerate(lv["concurrency"] for lv in on[0]["levels"]):
        a = [r["levels"][i] for r in on]
        b = [r["levels"][i] for r in off]
        ratio = _median(a, "requests_per_s") / (_median(b, "requests_per_s") or math.nan)
        errors = f"{sum(x['errors'] for x in a)}/{sum(x['errors'] for x in b)}"
        rows.append(f"| {c} | {_spread(a, 'requests_per_s')} | {_spread(b, 'requests_per_s')} | "
                    f"{ratio:.2f} | {_spread(a, 'p99_ms')} | {_spread(b, 'p99_ms')} | "
                    f"{_spread(a, 'p50_ms')} | {_spread(b, 'p50_ms')} | "
                    f"{_median(a, 'images_per_call'):.2f} | {errors} |")
    return "\n".join(rows)


def _median(levels: list[dict], key: str) -> float:
    values = [lv[key] for lv in levels if lv[key] is not None]
    return statistics.median(values) if values else math.nan


def _spread(levels: list[dict], key: str) -> str:
    values = [lv[key] for lv in levels if lv[key] is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


# ---------------------------------------------------------------- the command line

def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
                if ln.startswith("model name")), platform.processor())
    versions = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "fastapi", "starlette", "uvicorn", "httpx", "numpy", "pillow"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "nproc": os.cpu_count(), "load_average": list(os.getloadavg()),
            "versions": versions}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line through cli.run, not usage + message
        raise UserError(f"{message} (see --help)")


def parse(argv: list[str]) -> argparse.Namespace:
    p = _Parser(description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server: http://127.0.0.1:PORT")
    target.add_argument("--serve", metavar="RUN_OR_EXPORT", help="start scripts/serve.py on it "
                        "twice, batching on then off, and compare")
    p.add_argument("--images", nargs="+", required=True, help="image files or directories")
    p.add_argument("--max-files", type=int, default=512, help="image files read at most")
    p.add_argument("--concurrency", default="1,8,32", help="requests in flight, per level")
    p.add_argument("--requests", type=int, default=400, help="requests per level at most")
    p.add_argument("--seconds", type=float, default=60, help="seconds per level at most")
    p.add_argument("--images-per-request", type=int, default=1)
    p.add_argument("--format", choices=("multipart", "json"), default="multipart")
    p.add_argument("--timeout", type=float, default=30, help="seconds per request at most")
    p.add_argument("--server-args", default="", help="flags for scripts/serve.py (--serve)")
    p.add_argument("--repeats", type=int, default=1, help="rounds of on and off (--serve)")
    p.add_argument("--startup-s", type=float, default=300, help="seconds a server may take to "
                   "start (--serve)")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = p.parse_args(argv)
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        raise UserError(f"--concurrency must be integers separated by commas, got "
                        f"{args.concurrency!r}") from None
    bounds = [("--concurrency", min(args.concurrency), 1, 1024),
              ("--concurrency", max(args.concurrency), 1, 1024),
              ("--requests", args.requests, 1, 10**6), ("--seconds", args.seconds, 0.1, 3600),
              ("--images-per-request", args.images_per_request, 1, 4096),
              ("--timeout", args.timeout, 0.1, 600), ("--max-files", args.max_files, 1, 10**5),
              ("--startup-s", args.startup_s, 1, 3600), ("--repeats", args.repeats, 1, 100)]
    for name, v, lo, hi in bounds:
        if not lo <= v <= hi:  # also refuses nan
            raise UserError(f"{name} must be from {lo} to {hi}, got {v}")
    if args.url:
        u = urllib.parse.urlsplit(args.url)
        if u.scheme != "http" or u.hostname not in LOCAL_HOSTS:
            raise UserError(f"--url {args.url} is not http:// on {' or '.join(LOCAL_HOSTS)}: "
                            "load-test only servers on this machine")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv[1:])
    files = image_files(args.images, args.max_files)
    load = bodies(files, args.images_per_request, args.format)
    report = {"command": "python scripts/loadtest.py " + shlex.join(argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
              "images": {"files": len(files), "bytes": sum(map(os.path.getsize, files)),
                         "per_request": args.images_per_request, "format": args.format},
              "limits": {"requests": args.requests, "seconds": args.seconds}}
    if args.url:
        print(f"{args.url}:", flush=True)
        report["run"] = asyncio.run(run_levels(args.url, load, args))
    else:
        report["runs"] = compare(args.serve, load, args)
        table = compare_table(report["runs"]["on"], report["runs"]["off"])
        report["table"] = table
        print(table)
        codes = {k: [r["exit_code"] for r in v] for k, v in report["runs"].items()}
        print(f"server exit codes after SIGTERM: {codes}")
    report["load_average_after"] = list(os.getloadavg())
    if args.json:
        with open(args.json, "w") as f:
            f.write(json.dumps(report, indent=2) + "\n")
    runs = [report["run"]] if args.url else report["runs"]["on"] + report["runs"]["off"]
    failed = any(lv["errors"] for r in runs for lv in r["levels"])
    return 1 if failed or any(r.get("exit_code") for r in runs) else 0


if __name__ == "__main__":
    cli.run(main)
