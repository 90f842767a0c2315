"""Session lines: what the next batch takes, and what waits."""

import asyncio

import numpy as np
import pytest

from app.engine.lines import Lines, Work
from app.errors import Unavailable

LOOP = asyncio.new_event_loop()  # the futures' loop; nothing runs on it


def chunk(sid):
    return Work(sid, LOOP.create_future(), inputs=np.ones((1, 1)))


def action(sid):
    async def nothing():
        return None

    return Work(sid, LOOP.create_future(), action=nothing)


def test_a_batch_takes_each_free_sessions_first_chunk_in_arrival_order():
    lines = Lines(max_queue=100, max_session_queue=10)
    items = [chunk("a"), chunk("b"), chunk("a"), action("c"), chunk("c"), chunk("d")]
    for work in items:
        lines.add(work)
    lines.running.add("d")  # a chunk of d is in a batch in flight
    batch, actions, abandoned = lines.take(limit=10)
    assert batch == [items[0], items[1]] and actions == [items[3]] and abandoned == []
    assert list(lines.waiting) == [items[2], items[4], items[5]]  # behind their sessions' heads


def test_the_limit_holds_back_later_sessions_and_everything_behind_them():
    lines = Lines(max_queue=100, max_session_queue=10)
    items = [chunk("a"), chunk("b"), action("b"), chunk("c")]
    for work in items:
        lines.add(work)
    batch, actions, _ = lines.take(limit=1)
    assert batch == [items[0]] and actions == []  # b's action waits behind b's held-back chunk
    assert list(lines.waiting) == items[1:]


def test_a_chunk_whose_client_left_is_dropped_before_it_runs():
    lines = Lines(max_queue=100, max_session_queue=10)
    gone, kept = chunk("a"), chunk("b")
    gone.future.cancel()
    lines.add(gone)
    lines.add(kept)
    batch, _, abandoned = lines.take(limit=10)
    assert batch == [kept] and abandoned == [gone]


def test_full_lines_refuse_with_503():
    lines = Lines(max_queue=3, max_session_queue=2)
    lines.add(chunk("a"))
    lines.add(chunk("a"))
    with pytest.raises(Unavailable, match="items of this session"):
        lines.add(chunk("a"))
    lines.add(chunk("b"))
    with pytest.raises(Unavailable, match="already waiting"):
        lines.add(chunk("c"))
