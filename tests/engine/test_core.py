"""The engine in process: ordering of a session's work, and what a vanished client leaves."""

import asyncio

import numpy as np
import pytest

from app.errors import Conflict, SessionNotFound, Unavailable
from app.model.builtin import build_seed_model
from app.model.loader import load_model
from app.store.memory import MemoryStore
from tests.support.reference import StatefulReference
from tests.support.stores import only_model, start_engine


@pytest.fixture(scope="module")
def seed():
    return load_model("seed")


def run(seed, scenario, **options):
    async def main():
        store = MemoryStore(8)
        engine, _ = await start_engine(
            seed,
            store,
            max_batch=options.get("max_batch", 8),
            max_queue=options.get("max_queue", 64),
        )
        try:
            return await scenario(engine, store)
        finally:
            await engine.stop()

    return asyncio.run(main())


def chunk(*values):
    return np.array(values, np.float32)[:, None]


def test_a_sessions_chunks_and_reset_apply_in_arrival_order(seed):
    async def scenario(engine, store):
        record = await store.create("s", 0, 0.0, model_key=only_model(store))
        first = asyncio.ensure_future(engine.submit("s", chunk(1, 2)))
        second = asyncio.ensure_future(engine.submit("s", chunk(3)))
        reset = engine.enqueue("s", lambda: store.reset("s", 0.0, model_key=only_model(store)))
        third = asyncio.ensure_future(engine.submit("s", chunk(4, 5)))
        await asyncio.gather(first, second, reset, third)
        return (await first), (await third), (await store.read_state("s"))[1], record

    first, third, state, record = run(seed, scenario)
    reference = StatefulReference(build_seed_model())
    np.testing.assert_allclose(first.outputs, reference.feed(chunk(1, 2)), atol=1e-5)
    reference.reset()
    np.testing.assert_allclose(third.outputs, reference.feed(chunk(4, 5)), atol=1e-5)
    np.testing.assert_allclose(state[0], reference.states()[0], atol=1e-5)
    assert (record.seq, record.steps) == (3, 2)


def test_chunks_that_arrive_after_a_delete_get_404(seed):
    async def scenario(engine, store):
        await store.create("gone", 0, 0.0, model_key=only_model(store))
        before = [asyncio.ensure_future(engine.submit("gone", chunk(1))) for _ in range(2)]
        await asyncio.sleep(0)  # they arrive, and the first is already running
        delete = asyncio.ensure_future(engine.exclusive("gone", lambda: store.delete("gone")))
        await asyncio.sleep(0)
        after = [asyncio.ensure_future(engine.submit("gone", chunk(1))) for _ in range(2)]
        return await asyncio.gather(*before, delete, *after, return_exceptions=True)

    first, second, deleted, *late = run(seed, scenario)
    assert first.seq == 1 and second.seq == 2 and deleted is True
    assert all(isinstance(r, SessionNotFound) for r in late)


def test_a_cancelled_waiter_leaves_the_session_consistent(seed):
    values = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5]

    async def scenario(engine, store):
        record = await store.create("c", 0, 0.0, model_key=only_model(store))
        pushes = [asyncio.ensure_future(engine.submit("c", chunk(v))) for v in values]
        await asyncio.sleep(0)
        pushes[2].cancel()
        pushes[4].cancel()
        await asyncio.gather(*pushes, return_exceptions=True)
        return record, (await store.read_state("c"))[1]

    record, state = run(seed, scenario)
    # A chunk whose client left is applied whole or not at all; the state must be one of those.
    assert record.seq == record.steps
    candidates = []
    for skip2 in (False, True):
        for skip4 in (False, True):
            reference = StatefulReference(build_seed_model())
            fed = [
                v for i, v in enumerate(values) if not ((i == 2 and skip2) or (i == 4 and skip4))
            ]
            reference.feed(chunk(*fed)) if fed else None
            candidates.append((len(fed), reference.states()[0]))
    assert any(n == record.seq and np.allclose(s, state[0], atol=1e-5) for n, s in candidates)


def test_overload_and_warm_up_are_503(seed):
    async def scenario(engine, store):
        await store.create("q", 0, 0.0, model_key=only_model(store))
        engine.ready = False
        with pytest.raises(Unavailable):
            await engine.submit("q", chunk(1))
        engine.ready = True
        pushes = [engine.submit("q", chunk(1)) for _ in range(4)]  # in line at once: queue full
        with pytest.raises(Unavailable) as shed:
            await engine.submit("q", chunk(1))
        await asyncio.gather(*pushes)
        return shed.value

    shed = run(seed, scenario, max_queue=4)
    assert shed.headers["Retry-After"]


def test_seq_checks_happen_in_order(seed):
    async def scenario(engine, store):
        await store.create("o", 0, 0.0, model_key=only_model(store))
        a = asyncio.ensure_future(engine.submit("o", chunk(1), seq=1))
        b = asyncio.ensure_future(
            engine.submit("o", chunk(1), seq=1)
        )  # a retry of a, queued behind it
        c = asyncio.ensure_future(engine.submit("o", chunk(2), seq=3))
        return await asyncio.gather(a, b, c, return_exceptions=True)

    a, b, c = run(seed, scenario)
    assert (
        b.replayed and (b.seq, b.steps) == (a.seq, a.steps) and np.array_equal(b.outputs, a.outputs)
    )
    assert isinstance(c, Conflict) and c.extra["expected_seq"] == 2


def test_a_chunk_that_would_overflow_is_refused_alone_and_its_batch_goes_on():
    # A per-step Dense whose products overflow float32 for inputs near its limit: inf - inf in the
    # recurrent layer's sum is NaN. Such a chunk is refused; a session beside it in the same model
    # call is applied, exactly as alone.
    import keras

    from app.errors import InvalidInput
    from app.model.step import StreamingModel

    inputs = keras.Input(shape=(None, 1))
    scaled = keras.layers.Dense(
        2, use_bias=False, kernel_initializer=keras.initializers.Constant([[10.0, -10.0]])
    )(inputs)
    rnn = keras.layers.SimpleRNN(
        3, return_sequences=True, kernel_initializer="ones"
    )  # inf - inf: NaN
    model = StreamingModel(keras.Model(inputs, rnn(scaled)), "overflow")

    async def scenario(engine, store):
        for sid in ("huge", "plain"):
            await store.create(sid, 0, 0.0, model_key=only_model(store))
        await engine.submit("huge", chunk(0.5))
        before = (await store.read_state("huge"))[1][0].copy()
        results = await asyncio.gather(
            engine.submit("huge", chunk(3.4e38, 1.0)),
            engine.submit("plain", chunk(0.5)),
            return_exceptions=True,
        )
        return results, before, await store.read_state("huge"), await store.read_state("plain")

    (refused, applied), before, (huge, after), (plain, _) = run(model, scenario)
    assert isinstance(refused, InvalidInput) and "NaN or infinite" in refused.detail
    np.testing.assert_array_equal(after[0], before)
    assert (huge.seq, huge.steps) == (1, 1)
    assert np.isfinite(applied.outputs).all() and (plain.seq, plain.steps) == (1, 1)
    alone = model.run(chunk(0.5)[None], np.array([1], np.int32), [np.zeros((1, 3), np.float32)])[0][
        0
    ]
    np.testing.assert_allclose(applied.outputs, alone, atol=1e-6)


def test_a_reply_is_settled_once_by_the_engine_in_place_of_a_future(seed):
    """The stream's path: no asyncio future per chunk, the answer handed to a callback as the
    engine decides it (and a callback that fails does not disturb the batch beside it)."""
    from app.engine.lines import Reply

    async def scenario(engine, store):
        for sid in ("a", "b"):
            await store.create(sid, 0, 0.0, model_key=only_model(store))
        delivered = []
        good = Reply(delivered.append)
        bad = Reply(lambda reply: 1 / 0)
        assert engine.submit("a", chunk(0.5), reply=good) is good
        engine.submit("b", chunk(0.5), reply=bad)
        alone = await engine.submit("a", chunk(0.25))  # after both, in a's line
        missing = Reply(delivered.append)
        engine.submit("nobody", chunk(0.5), reply=missing)
        await engine.submit("b", chunk(0.25))
        return delivered, good, bad, alone, missing

    delivered, good, bad, alone, missing = run(seed, scenario)
    assert delivered == [good, missing] and good.done() and bad.done()
    assert good.result().seq == 1 and alone.seq == 2 and bad.result().seq == 1
    with pytest.raises(SessionNotFound):
        missing.result()


def test_calls_start_an_interval_apart_under_load_and_at_once_when_idle(seed):
    """--batch-interval-ms: a chunk that finds the engine idle goes at once; chunks right behind
    a call wait for the interval to pass since it started while a session seen lately (a live
    stream between two chunks) may still join, and go together in one call."""
    import time

    async def scenario(engine, store):
        engine.batch_interval = 0.3
        key = only_model(store)
        for sid in "abcde":
            await store.create(sid, 0, 0.0, model_key=key)
        await engine.submit("e", chunk(0.5))  # seen lately, and sends nothing more
        await asyncio.sleep(0.35)  # idle for longer than the interval
        started = time.perf_counter()
        await engine.submit("a", chunk(0.5))
        alone = time.perf_counter() - started
        calls = engine.tallies[key].executions
        await asyncio.gather(*(engine.submit(sid, chunk(0.5)) for sid in "bcd"))
        behind = time.perf_counter() - started
        return alone, behind, engine.tallies[key].executions - calls

    alone, behind, calls = run(seed, scenario)
    assert alone < 0.2 and behind >= 0.29 and calls == 1, (alone, behind, calls)


def test_the_interval_holds_no_call_when_every_session_seen_lately_is_waiting(seed):
    """Closed-loop clients (each sends when answered) are all waiting already: nobody else can
    join, so the interval would only stall them."""
    import time

    async def scenario(engine, store):
        engine.batch_interval = 0.3
        key = only_model(store)
        for sid in "abc":
            await store.create(sid, 0, 0.0, model_key=key)
        await asyncio.gather(*(engine.submit(sid, chunk(0.5)) for sid in "abc"))
        calls = engine.tallies[key].executions
        started = time.perf_counter()
        answers = await asyncio.gather(*(engine.submit(sid, chunk(0.5)) for sid in "abc"))
        return time.perf_counter() - started, engine.tallies[key].executions - calls, answers

    elapsed, calls, answers = run(seed, scenario)
    assert elapsed < 0.2 and calls == 1, (elapsed, calls)
    assert [a.seq for a in answers] == [2, 2, 2]
