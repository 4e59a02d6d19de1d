"""Download a file once, verified by sha256, with an atomic rename into place."""

import contextlib
import hashlib
import http.client
import os
import pathlib
import tempfile
import urllib.request

from jaxcnn.errors import UserError

CHUNK_BYTES = 1 << 20


def sha256_of(path: str | os.PathLike) -> str:
    """The hex sha256 of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: pathlib.Path, sha256: str, *, hint: str,
             timeout_s: float = 60.0) -> pathlib.Path:
    """Fetch `url` to `dest` unless it is there; raise `UserError` ending in `hint` on failure.

    The bytes go to a temp file beside `dest` and are renamed into place only once their sha256
    matches, so an interrupted or corrupt download never looks like a finished one.
    `timeout_s` bounds each blocking network operation, not the whole transfer.
    """
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with _progress(total, dest.name) as bar:
                while chunk := resp.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != sha256:
            raise UserError(f"the download of {url} has sha256 {digest.hexdigest()}, expected "
                            f"{sha256}: it is corrupt or was changed; retry, or {hint}")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a shared cache dir needs it readable
        os.replace(tmp, dest)
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise UserError(f"the download of {url} failed ({e}): {hint}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dest


def _progress(total: int | None, name: str):
    """A tqdm byte counter on stderr when it is a terminal; silent otherwise."""
    import tqdm  # lazy: only downloads need it

    return tqdm.tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}",
                     disable=None, leave=False)
