"""Dynamic batching: requests waiting at the same time share one call of the model.

    batcher = batching.Batcher(probabilities, (32, 32, 3), max_batch=32, max_wait_ms=0)
    await batcher.start()  # in the event loop that calls predict (the app's lifespan)
    probs_NxK = await batcher.predict(images_NxHxWxC)  # uint8 in, float32 NxK out
    await batcher.close()  # answers every waiting request, then refuses new ones

Why it works as it does:
- The model runs on one worker thread, one call at a time. The event loop goes on reading,
  decoding and answering meanwhile, and whatever arrives during a call waits in a queue and
  forms the next batch: the busier the model, the larger its batches, with no wait added.
- `max_wait_ms` (0 by default) holds the first waiting request that much longer for
  company. In results/loadtest-2026-11-29 (closed-loop clients, each sending its next request
  when answered) a 5 ms wait gave 0.18x and 0.76x the requests/s of no batching at 1 and 8
  clients, since a batch that cannot fill up waits it out, while 0 was at least as fast as no
  batching at 1, 8 and 32 clients (1.07x, 1.38x, 1.75x). A wait may pay off for clients that
  send without waiting for answers (open loop), which that test does not model.
- A call's images are padded with zeros up to a bucket: the powers of two below `max_batch`,
  and `max_batch` (`buckets`). That is log2(max_batch) + 1 shapes, all compiled before
  serving (the caller runs each once), so nothing compiles under load; a batch is never padded
  by half a bucket or more.
- First in, first out: a request never waits behind later ones, and one of more than
  `max_batch` images is cut into pieces of `max_batch`, answered together.
- `close` runs what waits without waiting out `max_wait_ms`, so a graceful shutdown answers
  every request it accepted; later ones get `ShuttingDown`.
- A failed call fails its own requests (`ModelFailed`, logged once per batch) and no others.

The model is any function from uint8 BxHxWxC to float32 BxK numpy arrays: this module imports
neither jax nor anything of jaxcnn.
"""

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

_log = logging.getLogger(__name__)


def buckets(max_batch: int) -> tuple[int, ...]:
    """The batch sizes compiled: powers of two below `max_batch`, then `max_batch`."""
    return tuple(1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch) + (
        max_batch,)


class ShuttingDown(Exception):
    """The batcher is closing: the request came after shutdown began."""


class ModelFailed(Exception):
    """The model call of a batch raised: each of its requests gets this, the batcher goes on."""


class _Waiting(NamedTuple):
    images_NxHxWxC: np.ndarray  # N <= max_batch
    result: asyncio.Future  # float32 NxK probabilities
    arrived: float  # loop time


class Batcher:
    """Stacks waiting requests into one model call, runs it on a worker thread, hands each its
    rows. `enabled=False` runs every request alone (still in pieces of `max_batch`, padded to
    a bucket), for comparison."""

    def __init__(self, probabilities: Callable[[np.ndarray], np.ndarray],
                 image_shape_HxWxC: tuple[int, int, int], *, max_batch: int,
                 max_wait_ms: float, enabled: bool = True):
        self.probabilities, self.image_shape = probabilities, tuple(image_shape_HxWxC)
        self.max_batch, self.max_wait_ms, self.enabled = max_batch, max_wait_ms, enabled
        self.buckets = buckets(max_batch)
        self.calls = self.images = self.padding = 0  # since start: what /v1/metadata reports
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._queued_images = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._worker: ThreadPoolExecutor | None = None

    @property
    def queued_images(self) -> int:
        return self._queued_images

    @property
    def closing(self) -> bool:
        return self._closing

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="jaxcnn-model")
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        """Refuse new requests, finish every waiting one, stop the worker."""
        self._closing = True
        if self._task is not None:
            self._wakeup.set()
            await self._task
            self._worker.shutdown(wait=True)

    async def predict(self, images_NxHxWxC: np.ndarray) -> np.ndarray:
        """float32 NxK probabilities of `images_NxHxWxC`, computed with other waiting requests."""
        if self._closing or self._task is None:
            raise ShuttingDown
        loop = asyncio.get_running_loop()
        pieces = []
        for i in range(0, len(images_NxHxWxC), self.max_batch):
            piece = images_NxHxWxC[i:i + self.max_batch]
            pieces.append(_Waiting(piece, loop.create_future(), loop.time()))
            self._waiting.append(pieces[-1])
            self._queued_images += len(piece)
        self._wakeup.set()
        return np.concatenate(await asyncio.gather(*(p.result for p in pieces)))

    async def _loop(self) -> None:
        while True:
            if not self._waiting:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._run(await self._collect())

    async def _collect(self) -> list[_Waiting]:
        """The next batch: the first waiting request, then as many of the following ones as
        fit, once `max_batch` images wait or `max_wait_ms` after the first one arrived."""
        loop = asyncio.get_running_loop()
        if self.enabled:
            deadline = self._waiting[0].arrived + self.max_wait_ms / 1000
            while self._queued_images < self.max_batch and not self._closing:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), left)
        batch = [self._waiting.popleft()]
        n = len(batch[0].images_NxHxWxC)
        while (self.enabled and self._waiting
               and n + len(self._waiting[0].images_NxHxWxC) <= self.max_batch):
            batch.append(self._waiting.popleft())
            n += len(batch[-1].images_NxHxWxC)
        self._queued_images -= n
        return batch

    async def _run(self, batch: list[_Waiting]) -> None:
        n = sum(len(w.images_NxHxWxC) for w in batch)
        b = next(size for size in self.buckets if size >= n)
        try:
            # padded to the bucket: one of the compiled shapes
            pad_PxHxWxC = np.zeros((b - n, *self.image_shape), np.uint8)
            images_BxHxWxC = np.concatenate([w.images_NxHxWxC for w in batch] + [pad_PxHxWxC])
            probs_BxK = await asyncio.get_running_loop().run_in_executor(
                self._worker, self.probabilities, images_BxHxWxC)
        except Exception as e:  # noqa: BLE001 - these requests fail, the batcher goes on
            _log.error("the model failed on a batch of %d images", n, exc_info=e)
            first = (str(e).splitlines() or [""])[0][:300]
            for w in batch:
                if not w.result.done():
                    w.result.set_exception(ModelFailed(f"{type(e).__name__}: {first}"))
            return
        self.calls += 1
        self.images += n
        self.padding += b - n
        start = 0
        for w in batch:
            rows = len(w.images_NxHxWxC)
            if not w.result.done():  # done: the client went away
                w.result.set_result(probs_BxK[start:start + rows])
            start += rows
