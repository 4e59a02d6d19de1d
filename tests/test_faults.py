"""Faults a real cluster has, each simulated for real in subprocesses (slow set).

A peer process killed with SIGKILL, a workdir that is not shared between processes, a disk that
refuses to grow (a file-size limit: writes fail with EFBIG as they would with ENOSPC), a save
stuck when SIGTERM comes, two runs started on one workdir. Each ends in one line and a known
exit code within a bound, and leaves the checkpoints already written intact and resumable.
"""

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, _env

from jaxcnn import checkpoint

pytestmark = pytest.mark.slow

# --noplots: none of these tests reads the plots a finished run draws (~2 s a run)
ARGS = ["--config", "configs/digits_cnn.py", "--noprogress", "--noplots"]


def _start(*args, devices=1, pre=""):
    """`scripts/train.py args` in a child, after the Python statements `pre` (limits, patches)."""
    code = textwrap.dedent(pre) + textwrap.dedent("""
        import runpy, sys
        sys.argv = ["scripts/train.py", *sys.argv[1:]]
        runpy.run_path("scripts/train.py", run_name="__main__")
        """)
    return subprocess.Popen([sys.executable, "-c", code, *ARGS, *map(str, args)], cwd=REPO,
                            env=_env(devices, None), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(p, timeout=240):
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        p.kill()
    return p.returncode, out, err


def _errors(err: str) -> list[str]:
    """The lines a user reads: ours, not Gloo's connection chatter."""
    return [x for x in err.splitlines() if x.startswith("error:")]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two(workdirs, *args):
    port = _port()
    return [_start("--workdir", w, "--coordinator", f"127.0.0.1:{port}", "--num-processes", 2,
                   "--process-id", i, *args, devices=2) for i, w in enumerate(workdirs)]


def _wait_for_checkpoint(d, procs, limit=240):
    t = time.monotonic()
    while checkpoint.latest_step(str(d)) is None:
        if any(p.poll() is not None for p in procs) or time.monotonic() - t > limit:
            for p in procs:
                p.kill()
            pytest.fail(f"no checkpoint was written: {[_finish(p)[2][-2000:] for p in procs]}")
        time.sleep(0.2)


def test_a_killed_peer_stops_the_other_process_within_the_timeout(tmp_path):
    w = tmp_path / "w"
    procs = _two([w, w], "--config.train.epochs=50", "--config.train.peer_timeout_s=8")
    _wait_for_checkpoint(w / "checkpoints", procs)
    procs[1].kill()  # SIGKILL: no goodbye
    killed = time.monotonic()
    rc, _, err = _finish(procs[0], timeout=120)
    took = time.monotonic() - killed
    assert rc == 75, err[-3000:]
    assert _errors(err) == [
        f"error: process 1 has not responded for 8 s; stopping process 0: the latest complete "
        f"checkpoint in {w / 'checkpoints'} is intact; restart every process with the same "
        "command to resume"]
    assert took < 8 + 15  # the timeout, one polling period, slack for a loaded machine
    # the latest checkpoint restores, checksums and all
    arrays, meta = checkpoint.load_arrays(str(w))
    assert meta["step"] == checkpoint.latest_step(str(w / "checkpoints")) and arrays


def test_a_workdir_the_processes_do_not_share_is_refused_at_start(tmp_path):
    procs = _two([tmp_path / "a", tmp_path / "b"], "--config.train.epochs=1")
    for i, p in enumerate(procs):
        rc, _, err = _finish(p, timeout=180)
        assert rc == 2, err[-3000:]
        assert _errors(err) == [
            f"error: --workdir {tmp_path / ('a', 'b')[i]} is not shared: process(es) [1] do not "
            "see what process 0 writes there; a multi-process run needs one workdir on a file "
            "system every host mounts"]
    assert not (tmp_path / "a" / "checkpoints").exists()


# The disk: every file may grow to 4 MB, the digits CNN's checkpoint needs ~45 MB.
FULL_DISK = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, 4_000_000))
"""


def test_a_full_disk_stops_the_run_at_once_and_keeps_the_checkpoints(tmp_path):
    rc, _, err = _finish(_start("--workdir", tmp_path, "--config.train.epochs=1"))
    assert rc == 0, err[-3000:]
    before = (tmp_path / "metrics.jsonl").read_text()
    # resumed at epoch 2, saves after epochs 5, 10 and 11 (22 steps each): the first fails
    args = ["--workdir", tmp_path, "--config.train.epochs=11",
            "--config.checkpoint.every_epochs=5"]
    rc, out, err = _finish(_start(*args, pre=FULL_DISK))
    assert rc == 2, err[-3000:]
    [line] = _errors(err)
    assert line.startswith(f"error: saving checkpoint 110 in {tmp_path / 'checkpoints'} failed "
                           "(File too large: ")
    assert line.endswith("the checkpoints already there are intact (latest: 22); free disk "
                         "space or fix the workdir, then rerun the same command to resume")
    # seen when the write failed, not at the next save: training did not go on without it
    assert "epoch 10/11" not in out, out
    # nothing else: no traceback of the failed save (~600 lines before), none of the "Event
    # loop is closed" ones TensorStore's writer callbacks report after Orbax gave up on it
    assert err.strip().splitlines() == [line], err[-3000:]
    # the space comes back: the same command resumes from step 22 and finishes
    rc, out, err = _finish(_start(*args))
    assert rc == 0, err[-3000:]
    assert "resuming from" in out and "checkpoints/22" in out
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 12))
    assert json.loads(before.splitlines()[0]) == rows[0]


STUCK_SAVE = """
import time
from jaxcnn import checkpoint
def stuck(self, *a, **k):
    time.sleep(3600)  # a save that never returns: a hung network file system
checkpoint.RunCheckpoints.save = stuck
"""


def test_sigterm_wins_over_a_stuck_save_within_the_timeout(tmp_path):
    # the save after epoch 1 never returns; SIGTERM comes while the run waits for it
    p = _start("--workdir", tmp_path, "--config.train.epochs=50",
               "--config.checkpoint.stop_timeout_s=5", pre=STUCK_SAVE)
    t = time.monotonic()
    while not (tmp_path / "metrics.jsonl").exists():  # epoch 1's row, written before its save
        if p.poll() is not None or time.monotonic() - t > 180:
            p.kill()
            pytest.fail(f"the run ended or took too long: {_finish(p)[2][-2000:]}")
        time.sleep(0.2)
    time.sleep(1)  # into the save
    p.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    rc, _, err = _finish(p, timeout=60)
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    assert time.monotonic() - sent < 5 + 10
    assert _errors(err) == [
        "error: SIGTERM: the run did not stop within checkpoint.stop_timeout_s=5 s (a save or "
        "a step still running); stopping without saving: the checkpoints already written are "
        "intact"]


def test_two_runs_started_on_one_workdir_at_once(tmp_path):
    procs = [_start("--workdir", tmp_path, "--config.train.epochs=2") for _ in range(2)]
    results = [_finish(p) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 2], [e[-2000:] for _, _, e in results]
    refused = next(err for rc, _, err in results if rc == 2)
    assert _errors(refused)[0].startswith(f"error: {tmp_path} is in use by another run (pid ")
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert checkpoint.latest_step(str(tmp_path / "checkpoints")) == 44


def test_sigkill_leaves_a_resumable_workdir_and_no_lock_in_the_way(tmp_path):
    # 2 epochs of 22 steps, saved at steps 5, 10, ..., 40 and 44: the kill comes as the first
    # checkpoint appears, with most of the run and its saves still ahead
    p = _start("--workdir", tmp_path, "--config.train.epochs=2",
               "--config.checkpoint.every_steps=5")
    _wait_for_checkpoint(tmp_path / "checkpoints", [p])
    p.kill()  # SIGKILL: no handler, no release of the lock, maybe a save half-written
    _finish(p)
    assert (tmp_path / ".lock").exists()  # left behind, but no process holds it
    killed_at = checkpoint.latest_step(str(tmp_path / "checkpoints"))
    rc, out, err = _finish(_start("--workdir", tmp_path, "--config.train.epochs=2",
                                  "--config.checkpoint.every_steps=5"))
    assert rc == 0, err[-3000:]
    assert f"resuming from {tmp_path / 'checkpoints'}/{killed_at}" in out
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert not (tmp_path / ".lock").exists()
    assert "plots:" not in out and not (tmp_path / "plots").exists()  # --noplots
