"""A request storm from its own process: N concurrent connections GET one URL at once.

    python -m mainevent.media.edge.storm URL N [--header 'Name: value'] [--timeout S] [--on-cue]

Prints one JSON line: status counts, `X-Cache` counts, body digests (sha256 → count), errors,
and `timing`: seconds from the release to the last request written (`sent_s`) and to the
first and last complete answers (`first_answer_s`, `last_answer_s`).
Raw asyncio sockets with httptools, so one process can hold thousands of connections.

With `--on-cue` it first opens the connections to URL's host, prints `{"connected": k}` and
fires only when a line arrives on stdin: that line (a URL on the same host, or empty for URL) is
what every client requests. A test against a live origin picks the object at the last moment,
one not published yet, without counting the seconds the connections take to open.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httptools

__all__ = ["storm"]


class _Response:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


def _request(url: str, headers: dict[str, str]) -> bytes:
    u = urlsplit(url)
    target = u.path + (f"?{u.query}" if u.query else "")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\n{extra}Connection: close\r\n\r\n".encode()


class _Clock:
    """When the requests were released, and when each was written and answered (loop time)."""

    def __init__(self) -> None:
        self.released = 0.0
        self.sent: list[float] = []
        self.answered: list[float] = []


async def _one(
    host: str,
    port: int,
    go: asyncio.Future[bytes],
    opened: list[int],
    limit_s: float,
    clock: _Clock,
) -> tuple[int, str, str]:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit_s)
    opened[0] += 1
    try:
        request = await go
        writer.write(request)
        await writer.drain()
        clock.sent.append(loop.time())
        resp = _Response()
        parser = httptools.HttpResponseParser(resp)
        async with asyncio.timeout(limit_s):
            while not resp.done:
                data = await reader.read(65536)
                if not data:
                    parser.feed_data(b"")
                    break
                parser.feed_data(data)
        if not resp.done:
            return 0, "", "truncated"
        clock.answered.append(loop.time())
        body = b"".join(resp.body)
        declared = resp.headers.get("content-length")
        if declared is not None and int(declared) != len(body):
            return 0, "", "short"
        return (
            parser.get_status_code(),
            resp.headers.get("x-cache", "-"),
            hashlib.sha256(body).hexdigest(),
        )
    finally:
        writer.close()


async def storm(
    url: str,
    n: int,
    headers: dict[str, str] | None = None,
    limit_s: float = 30.0,
    cue: Callable[[int], Awaitable[str | None]] | None = None,
) -> dict[str, object]:
    """Connect `n` clients first, then release all requests together; summarise the answers.

    Without `cue` the requests go out once the connections had 2.5 s to open. With it, once
    every connection is open (or failed, or `limit_s` passed), `cue(open connections)` is
    awaited and names the URL to request (None: `url`), which must be on `url`'s host and port.
    """
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    loop = asyncio.get_running_loop()
    go: asyncio.Future[bytes] = loop.create_future()
    opened = [0]
    clock = _Clock()
    tasks = [asyncio.create_task(_one(host, port, go, opened, limit_s, clock)) for _ in range(n)]
    await asyncio.sleep(0)
    if cue is None:
        # Let the connections open (bounded by the backlog) before firing.
        for _ in range(50):
            await asyncio.sleep(0.05)
        clock.released = loop.time()
        go.set_result(_request(url, headers or {}))
    else:
        deadline = loop.time() + limit_s
        while opened[0] + sum(t.done() for t in tasks) < n:
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.02)
        try:
            chosen = await cue(opened[0]) or url
            c = urlsplit(chosen)
            if (c.hostname, c.port) != (u.hostname, u.port):
                raise ValueError(f"cue {chosen!r} is not on {u.netloc}")
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        clock.released = loop.time()
        go.set_result(_request(chosen, headers or {}))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    statuses: Counter[str] = Counter()
    caches: Counter[str] = Counter()
    digests: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in results:
        if isinstance(r, BaseException):
            errors[type(r).__name__] += 1
            continue
        status, cache, digest = r
        if status == 0:
            errors[digest] += 1
            continue
        statuses[str(status)] += 1
        caches[cache] += 1
        digests[digest] += 1

    def since(times: list[float], pick: Callable[[list[float]], float]) -> float | None:
        return round(pick(times) - clock.released, 4) if times else None

    return {
        "statuses": dict(statuses),
        "x_cache": dict(caches),
        "digests": dict(digests),
        "errors": dict(errors),
        "timing": {
            "sent_s": since(clock.sent, max),
            "first_answer_s": since(clock.answered, min),
            "last_answer_s": since(clock.answered, max),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mainevent.media.edge.storm")
    p.add_argument("url")
    p.add_argument("n", type=int)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument(
        "--on-cue",
        action="store_true",
        help='open the connections, print {"connected": k}, fire when a URL line comes on stdin',
    )
    args = p.parse_args(argv)
    headers = dict(h.split(": ", 1) for h in args.header)

    async def cue(connected: int) -> str | None:
        print(json.dumps({"connected": connected}), flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            raise SystemExit("stdin closed before the cue")
        return line.strip() or None

    summary = asyncio.run(
        storm(args.url, args.n, headers, args.timeout, cue if args.on_cue else None)
    )
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
