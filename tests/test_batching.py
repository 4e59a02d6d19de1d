"""The dynamic batcher on its own: which requests share a call, padding, pieces, failures.

The model is a numpy function that gives each image's first pixel as its one "probability",
so every answer shows whose rows it got; the HTTP side is tests/test_server.py.
"""

import asyncio
import threading
import time

import numpy as np
import pytest

from jaxcnn import batching

SHAPE = (2, 2, 1)


def images(*values: int) -> np.ndarray:
    """uint8 Nx2x2x1, image i filled with values[i]."""
    return np.broadcast_to(np.array(values, np.uint8)[:, None, None, None],
                           (len(values), *SHAPE)).copy()


class Model:
    """probabilities of a batch: each image's first pixel, float32 Bx1; records batch sizes.
    With `hold`, the first call blocks until `release` is set, as a busy model would; the call
    numbered `fail_call` (from 1) raises."""

    def __init__(self, hold: bool = False, fail_call: int = 0):
        self.sizes: list[int] = []
        self.running, self.release = threading.Event(), threading.Event()
        self.hold, self.fail_call = hold, fail_call

    def __call__(self, x_BxHxWxC: np.ndarray) -> np.ndarray:
        self.sizes.append(len(x_BxHxWxC))
        self.running.set()
        if self.hold and len(self.sizes) == 1:
            assert self.release.wait(10)
        if len(self.sizes) == self.fail_call:
            raise RuntimeError("out of memory\nsecond line")
        return x_BxHxWxC[:, 0, 0, :].astype(np.float32)


def run(batcher: batching.Batcher, scenario) -> None:
    async def main():
        await batcher.start()
        try:
            await scenario()
        finally:
            await batcher.close()

    asyncio.run(main())


def rows(probs_Nx1: np.ndarray) -> list[int]:
    return [int(p) for p in probs_Nx1[:, 0]]


def test_buckets_are_powers_of_two_up_to_max_batch():
    assert batching.buckets(1) == (1,) and batching.buckets(32) == (1, 2, 4, 8, 16, 32)
    assert batching.buckets(12) == (1, 2, 4, 8, 12)


def test_without_a_wait_requests_that_arrive_while_the_model_is_busy_share_the_next_call():
    model = Model(hold=True)
    batcher = batching.Batcher(model, SHAPE, max_batch=4, max_wait_ms=0)

    async def scenario():
        first = asyncio.create_task(batcher.predict(images(1)))
        assert await asyncio.to_thread(model.running.wait, 10)  # the model is busy with it
        later = [asyncio.create_task(batcher.predict(images(*v))) for v in [(2,), (3, 4)]]
        while batcher.queued_images < 3:
            await asyncio.sleep(0.001)
        model.release.set()
        assert rows(await first) == [1]
        assert [rows(await t) for t in later] == [[2], [3, 4]]

    run(batcher, scenario)
    assert model.sizes == [1, 4]  # the second call: 3 images padded to the bucket of 4
    assert (batcher.calls, batcher.images, batcher.padding) == (2, 4, 1)


def test_a_wait_holds_a_lone_request_until_its_deadline():
    model = Model()
    batcher = batching.Batcher(model, SHAPE, max_batch=4, max_wait_ms=50)

    async def scenario():
        start = time.perf_counter()
        assert rows(await batcher.predict(images(7))) == [7]
        assert time.perf_counter() - start >= 0.05

    run(batcher, scenario)
    assert model.sizes == [1]


@pytest.mark.parametrize("enabled, sizes, padding", [(True, [4, 4], 0),
                                                     (False, [4, 4, 1], 1)])
def test_requests_over_max_batch_go_in_pieces_first_in_first_out(enabled, sizes, padding):
    """7 images then 1: pieces of 4 and 3, the 1 joining the 3 (or alone, batching off)."""
    model = Model(hold=True)
    batcher = batching.Batcher(model, SHAPE, max_batch=4, max_wait_ms=0, enabled=enabled)

    async def scenario():
        first = asyncio.create_task(batcher.predict(images(9)))
        assert await asyncio.to_thread(model.running.wait, 10)
        big = asyncio.create_task(batcher.predict(images(*range(10, 17))))
        small = asyncio.create_task(batcher.predict(images(20)))
        while batcher.queued_images < 8:
            await asyncio.sleep(0.001)
        model.release.set()
        assert rows(await first) == [9]
        assert rows(await big) == list(range(10, 17)) and rows(await small) == [20]

    run(batcher, scenario)
    assert model.sizes == [1] + sizes
    assert batcher.padding == padding and batcher.images == 9


def test_a_failed_call_fails_its_own_requests_and_the_next_call_works():
    model = Model(hold=True, fail_call=2)
    batcher = batching.Batcher(model, SHAPE, max_batch=4, max_wait_ms=0)

    async def scenario():
        first = asyncio.create_task(batcher.predict(images(1)))
        assert await asyncio.to_thread(model.running.wait, 10)
        failing = [asyncio.create_task(batcher.predict(images(v))) for v in (2, 3)]
        while batcher.queued_images < 2:
            await asyncio.sleep(0.001)
        model.release.set()
        assert rows(await first) == [1]
        for t in failing:  # both in the second call
            with pytest.raises(batching.ModelFailed, match="^RuntimeError: out of memory$"):
                await t
        assert rows(await batcher.predict(images(4))) == [4]

    run(batcher, scenario)
    assert model.sizes == [1, 2, 1] and batcher.calls == 2  # counted: the calls that answered


def test_close_answers_what_waits_without_its_wait_then_refuses():
    batcher = batching.Batcher(Model(), SHAPE, max_batch=4, max_wait_ms=5000)

    async def scenario():
        await batcher.start()
        waiting = asyncio.create_task(batcher.predict(images(5)))
        while batcher.queued_images == 0:
            await asyncio.sleep(0.001)
        start = time.perf_counter()
        await batcher.close()
        assert time.perf_counter() - start < 2 and rows(await waiting) == [5]
        with pytest.raises(batching.ShuttingDown):
            await batcher.predict(images(6))

    asyncio.run(scenario())
