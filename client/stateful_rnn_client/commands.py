"""``stream`` and ``demo``: the client from the command line (``stateful-rnn-client``, and the
server's ``stateful-rnn``). An expected failure is one line on stderr and its exit code
(:mod:`stateful_rnn_client.failures`); ``--debug`` shows the traceback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stateful_rnn_client.aio import AsyncClient, AsyncSession
from stateful_rnn_client.errors import SessionGone
from stateful_rnn_client.failures import BAD_INPUT, DIFFERENT, NO_INPUT, Failure, guarded

NOTEBOOK = [-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0]


def add_commands(subcommands: argparse._SubParsersAction) -> None:
    stream = subcommands.add_parser(
        "stream",
        help="stream a CSV or .npy file through a session",
        description="Stream INPUT's rows (one time step each) through a session, chunk by chunk, "
        "and write the model's outputs. Chunks are numbered, so a dropped connection is resumed "
        "without losing or doubling one.",
    )
    stream.add_argument(
        "input", type=Path, help="a .csv (numbers, optional header) or .npy file: T rows of F"
    )
    _connection_arguments(stream)
    stream.add_argument(
        "--session", help="session id; created if it does not exist (default: a new one)"
    )
    stream.add_argument(
        "--model",
        dest="model_name",
        help="the model a new session runs (needed when the server serves several)",
    )
    stream.add_argument("--model-version", type=int, help="its version (default: the newest)")
    stream.add_argument(
        "--chunk", type=int, default=10, help="rows per chunk (default: %(default)s)"
    )
    stream.add_argument(
        "--rate", type=float, help="pace the stream at this many rows per second, like a live feed"
    )
    stream.add_argument("--out", type=Path, help="write the outputs here (.csv or .npy)")
    stream.add_argument(
        "--transport", choices=["ws", "http"], default="ws", help="default: %(default)s"
    )
    demo = subcommands.add_parser(
        "demo",
        help="replay the seed notebook against a running server",
        description="Feed the notebook's sequence to one session in three chunks and to another "
        "whole, and print their states side by side (best with --model seed).",
    )
    _connection_arguments(demo)


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the server (default: %(default)s)"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SRNN_API_KEY"),
        help="bearer key, when the server wants one (default: $SRNN_API_KEY, which, unlike "
        "this flag, other users cannot see in the process list)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="give up on a call after this many seconds, retries included (default: %(default)s)",
    )
    parser.add_argument("--debug", action="store_true", help="on failure, show the traceback")


def run(args: argparse.Namespace) -> int:
    """Run a client command; an expected failure is one line on stderr and its exit code."""
    command = stream_file if args.command == "stream" else demo
    return guarded(lambda: asyncio.run(command(args)), args.debug, args.prog)


def read_rows(path: Path) -> np.ndarray:
    """A file's rows as float32 [T, F]."""
    try:
        if path.suffix == ".npy":
            rows = np.load(path, allow_pickle=False)
        else:
            rows = _read_csv(path)
    except OSError as exc:
        raise Failure(NO_INPUT, f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise Failure(BAD_INPUT, f"{path} is not a table of numbers: {exc}") from exc
    if rows.dtype.kind not in "biuf" or rows.ndim not in (1, 2):
        raise Failure(
            BAD_INPUT,
            f"{path} holds a {rows.ndim}-dimensional array of {rows.dtype}: it must be rows of numbers (T, or T x F)",
        )
    rows = np.ascontiguousarray(rows, np.float32)
    rows = rows[:, None] if rows.ndim == 1 else rows
    if not len(rows):
        raise Failure(BAD_INPUT, f"{path} has no rows")
    if not np.isfinite(rows).all():
        raise Failure(BAD_INPUT, f"{path} holds NaN or infinity")
    return rows


def _read_csv(path: Path) -> np.ndarray:
    """The numbers of a CSV file (an optional header line first); a value that is not a number,
    or a row of another width, is reported at its line in the file (as an editor numbers it)."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        numbered = [
            (n, row) for n, row in enumerate(csv.reader(file), 1) if any(c.strip() for c in row)
        ]
    if numbered and not _number(numbered[0][1][0]):
        numbered = numbered[1:]  # a header line
    rows = []
    for line, cells in numbered:
        for column, cell in enumerate(cells, 1):
            if not _number(cell):
                raise ValueError(f"line {line}, column {column}: {cell.strip()!r} is not a number")
        if rows and len(cells) != len(rows[0]):
            raise ValueError(
                f"line {line} has {len(cells)} values, the lines before it {len(rows[0])}"
            )
        rows.append([float(cell) for cell in cells])
    return np.array(rows, np.float64).reshape(len(rows), -1) if rows else np.empty((0, 1))


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_rows(path: Path, rows: np.ndarray) -> None:
    if path.suffix == ".npy":
        np.save(path, rows)
    else:
        np.savetxt(path, rows, delimiter=",", fmt="%.9g")


async def layout_of(
    client: AsyncClient, session_id: str | None, model: str | None, version: int | None
) -> tuple[AsyncSession | None, dict[str, Any]]:
    """The session to continue (None: one is to be made) and the layout of the model version its
    chunks will meet, both found before anything is created."""
    if session_id is not None:
        with contextlib.suppress(SessionGone):
            session = await client.session(session_id)
            return session, await session.model()
    if model is None:
        return None, await client.model()
    document = (await client.request("GET", f"/v1/models/{model}")).json()
    number = version or document["default_version"]
    for found in document["versions"]:
        if found["version"] == number and found["fingerprint"] is not None:
            return None, found
    raise Failure(BAD_INPUT, f"model {model} has no version {number} ready on the server")


async def stream_file(args: argparse.Namespace) -> int:
    rows = read_rows(args.input)
    chunks = [rows[i : i + args.chunk] for i in range(0, len(rows), args.chunk)]
    console = Console(stderr=True)
    outputs: list[np.ndarray] = []
    latencies: list[float] = []
    async with AsyncClient(args.url, args.api_key, timeout=args.timeout) as client:
        session, layout = await layout_of(client, args.session, args.model_name, args.model_version)
        if rows.shape[1] != layout["input_features"]:
            raise Failure(
                BAD_INPUT,
                f"{args.input} has {rows.shape[1]} column(s); model {layout.get('name', '')} "
                f"takes {layout['input_features']} input feature(s)",
            )
        created = session is None
        if session is None:
            session = await client.create_session(
                args.session, model=args.model_name, version=args.model_version
            )
        first_seq = session.seq
        try:
            console.print(
                f"session [bold]{session.id}[/] (seq {session.seq}), {len(rows)} rows in "
                f"{len(chunks)} chunk{'s' if len(chunks) != 1 else ''} of {args.chunk}, "
                f"over {args.transport}"
            )
            started = time.perf_counter()
            async with contextlib.AsyncExitStack() as stack:
                stream = (
                    await stack.enter_async_context(session.stream())
                    if args.transport == "ws"
                    else None
                )
                columns = [
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]:>8.0f} rows/s  p50 {task.fields[p50]:6.2f} ms"),
                    TimeElapsedColumn(),
                ]
                with Progress(*columns, console=console) as progress:
                    task = progress.add_task("streaming", total=len(rows), rate=0.0, p50=0.0)
                    sent = 0
                    for chunk in chunks:
                        if args.rate:  # a live feed: chunk k leaves when its last row is due
                            due = started + (sent + len(chunk)) / args.rate
                            await asyncio.sleep(max(0.0, due - time.perf_counter()))
                        begin = time.perf_counter()
                        output = await (stream.send(chunk) if stream else session.push(chunk))
                        latencies.append(time.perf_counter() - begin)
                        outputs.append(output)
                        sent += len(chunk)
                        elapsed = time.perf_counter() - started
                        progress.update(
                            task,
                            advance=len(chunk),
                            rate=sent / elapsed,
                            p50=1000 * float(np.median(latencies[-200:])),
                        )
        except BaseException:
            if (
                created and session.seq == first_seq
            ):  # nothing applied: leave no session holding a slot
                with contextlib.suppress(Exception):
                    await asyncio.shield(session.delete())
            raise
    per_step = outputs and outputs[0].ndim == 2
    result = np.concatenate(outputs) if per_step else np.stack(outputs)
    if args.out:
        write_rows(args.out, result)
    console.print(
        f"done: {len(rows)} rows, seq {session.seq}, "
        f"{len(rows) / (time.perf_counter() - started):.0f} rows/s, "
        f"p50 {1000 * np.median(latencies):.2f} ms, p99 {1000 * np.quantile(latencies, 0.99):.2f} ms"
        + (f", outputs in {args.out}" if args.out else "")
    )
    return 0


async def demo(args: argparse.Namespace) -> int:
    console = Console()
    async with AsyncClient(args.url, args.api_key, timeout=args.timeout) as client:
        model: dict[str, Any] = await client.model()
        if model["input_features"] != 1:
            raise Failure(
                BAD_INPUT,
                f"the demo needs a model with one input feature; {model['name']} has "
                f"{model['input_features']} (serve --model seed)",
            )
        chunked, whole = await client.create_session(), await client.create_session()
        for start in (0, 3, 6):
            part = np.array(NOTEBOOK[start : start + 3])
            console.print(f"chunked <- {part.tolist()}")
            await chunked.push(part)
        console.print(f"whole   <- {NOTEBOOK}")
        await whole.push(np.array(NOTEBOOK))
        a, b = await chunked.state(), await whole.state()
        table = Table(title=f"{model['name']}: states after the same sequence")
        for column in ("layer", "chunked (3 x 3 steps)", "whole (9 steps)", "max |diff|"):
            table.add_column(column)
        worst = 0.0
        for la, lb in zip(a["layers"], b["layers"]):
            for sa, sb in zip(la["states"], lb["states"]):
                diff = float(np.max(np.abs(np.subtract(sa, sb))))
                worst = max(worst, diff)
                table.add_row(la["name"], _vector(sa), _vector(sb), f"{diff:.1e}")
        console.print(table)
        console.print("equal within 1e-5" if worst <= 1e-5 else f"DIFFERENT by {worst}")
        await chunked.delete()
        await whole.delete()
        return 0 if worst <= 1e-5 else DIFFERENT


def _vector(values: list[float]) -> str:
    return (
        "["
        + ", ".join(f"{v:+.4f}" for v in values[:8])
        + (", ..." if len(values) > 8 else "")
        + "]"
    )
