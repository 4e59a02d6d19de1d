"""A run owns its workdir: one run at a time, and a resumed run is the same run.

- `WorkdirLock`: an exclusive OS file lock (`fcntl.flock` on `<workdir>/.lock`) held for the
  whole run by process 0. The OS drops it when the process dies, however it dies, so a lock
  left by a killed run is never stale; the file records pid, host and start time so a refusal
  can say who holds it.
- `run_identity` / `check_same_run`: the fields of the config that change results, plus a
  digest of the data, are saved with every checkpoint; resuming with any of them changed is
  refused, naming the fields. Only `MAY_CHANGE` may differ (extending epochs, logging,
  checkpoint cadence, how data is loaded).
- `check_shared`: in a multi-process run every process must see the same workdir (a shared
  file system); one that does not is refused at start instead of hanging at the first save.
- `write_atomic`: config.json and the like are replaced whole, never seen half-written.
"""

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import socket
import time

import numpy as np
from ml_collections import ConfigDict

from jaxcnn.errors import UserError

LOCK_FILE = ".lock"
# Config fields that cannot change what a resumed run computes (or only extend it).
MAY_CHANGE = ("train.epochs", "train.log_every_steps", "train.steps_per_call",
              "train.divergence_factor", "train.peer_timeout_s", "train.eval_batch_size",
              "train.profile_steps", "train.test_every_epoch",
              "checkpoint.", "data.cache_dir", "data.on_device", "data.workers",
              "data.max_file_bytes", "data.max_image_pixels", "data.verify_sha256")


class WorkdirLock:
    """Hold `<workdir>/.lock` exclusively; a second run on the workdir is refused at once.

    The file exists only while a run holds it (a refused or finished run leaves the workdir as
    it found it). Deleting it on release races with a run that opened it just before: so after
    locking, a run checks that the file it locked is still the one at the path, else retries.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd = None

    def acquire(self) -> "WorkdirLock":
        while self._fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise UserError(f"cannot write in --workdir {os.path.dirname(self.path)} "
                                f"({e.strerror}): pass a directory this user can write") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read(fd)
                os.close(fd)
                raise UserError(f"{os.path.dirname(self.path)} is in use by another run "
                                f"({holder}): wait for it or stop it, or pass another "
                                "--workdir") from None
            if _same_file(fd, self.path):
                self._fd = fd
            else:  # released and deleted by its holder between our open and our lock
                os.close(fd)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()}, started "
                           f"{datetime.datetime.now().isoformat(timespec='seconds')}\n".encode())
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still locked: no one can hold a deleted file
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read(fd: int) -> str:
    """Who holds the lock: the holder writes it just after locking, so wait a moment for it."""
    for _ in range(20):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 500).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "holder unknown"


# ---------------------------------------------------------------- the same run

def run_identity(config: ConfigDict, data) -> dict:
    """What makes a run this run: every config field but `MAY_CHANGE`, and the data's digest."""
    fields = {k: v for k, v in _flat(config.to_dict()).items()
              if not any(k == m or (m.endswith(".") and k.startswith(m)) for m in MAY_CHANGE)}
    return {"config": json.loads(json.dumps(fields, default=str)),
            "data": data_digest(data) if data is not None else None}


def data_digest(data) -> str:
    """sha256 of the data set's arrays (images, labels, class names), in order."""
    h = hashlib.sha256()
    for a in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        if a.size:  # a streamed run holds no training image (its feed checks the records)
            h.update(memoryview(a).cast("B"))
    h.update("\n".join(data.class_names).encode())
    return h.hexdigest()


def check_same_run(saved: dict | None, now: dict, where: str) -> None:
    """Refuse to resume the checkpoint at `where` (identity `saved`) with identity `now`."""
    if not saved:
        return  # a checkpoint from before identities were recorded
    # A field the checkpoint predates had its default then: a run saved before a field was
    # added resumes as long as the field is left at its default.
    old = {**_defaults(), **saved.get("config", {})}
    new = now["config"]
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k, "unset") != new.get(k, "unset")]
    shown = ", ".join(f"{k} ({_short(old.get(k, 'unset'))} -> {_short(new.get(k, 'unset'))})"
                      for k in changed[:4]) + (f" and {len(changed) - 4} more"
                                                if len(changed) > 4 else "")
    if not changed and saved.get("data") != now["data"]:
        shown = "the data (same name, different images or labels)"
    if changed or saved.get("data") != now["data"]:
        raise UserError(f"{where} was saved by a different run: {shown} changed; pass another "
                        "--workdir for a new run (only train.epochs, to extend, logging and "
                        "checkpoint fields may change on resume)")


def _defaults() -> dict:
    from jaxcnn.config import default_config  # config imports nothing of this module's users
    return run_identity(default_config(), None)["config"]


def _short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


# ---------------------------------------------------------------- files

def write_atomic(path: str, content: str | bytes) -> None:
    """Write `content` to `path` through a temporary file and a rename: a reader sees the old
    file or the whole new one, never a part."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_shared(workdir: str) -> None:
    """Multi-process runs: every process must see process 0's workdir (one shared file system).

    Process 0 writes a token file; every process reads it after a barrier; if any process
    cannot, all refuse together (a collective, so none is left waiting at a save).
    """
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return
    token = np.frombuffer(os.urandom(8), np.uint32)
    token = multihost_utils.broadcast_one_to_all(token)
    path = os.path.join(workdir, ".shared-check")
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        write_atomic(path, token.tobytes().hex())
    multihost_utils.sync_global_devices("jaxcnn workdir token written")
    try:
        with open(path) as f:
            seen = f.read().strip() == np.asarray(token).tobytes().hex()
    except OSError:
        seen = False
    everyone = multihost_utils.process_allgather(np.array([seen]))
    if not np.all(everyone):
        blind = [i for i, ok in enumerate(np.ravel(everyone)) if not ok]
        raise UserError(f"--workdir {workdir} is not shared: process(es) {blind} do not see "
                        "what process 0 writes there; a multi-process run needs one workdir on "
                        "a file system every host mounts")
