"""The copying of workers' output (``dispatcher/executors/_forward.py``): whole
lines, never two workers' output mixed inside one; a line that does not end is
still copied, soon."""

from __future__ import annotations

import os
import time

from dispatcher.executors._forward import HOLD_SECONDS, Forwarder


def read_until(fd: int, want: bytes, seconds: float = 30) -> bytes:
    got = b""
    deadline = time.monotonic() + seconds
    while want not in got and time.monotonic() < deadline:
        got += os.read(fd, 4096)
    return got


def test_two_workers_writing_at_once_never_share_a_line():
    out_r, out_w = os.pipe()
    pipes = [os.pipe() for _ in range(2)]
    forwarder = Forwarder()
    try:
        for r, _ in pipes:
            forwarder.add(os.fdopen(r, "rb", buffering=0), out_w)
        (_, a), (_, b) = pipes
        for i in range(20):  # each writes a value, then its end of line, as unbuffered print does
            os.write(a, b"%d" % (1000 + i))
            os.write(b, b"%d" % (2000 + i))
            time.sleep(0.002)
            os.write(a, b"\n")
            os.write(b, b"\n")
        got = read_until(out_r, b"2019\n")
        while got.count(b"\n") < 40:
            got += read_until(out_r, b"\n")
        lines = got.decode().splitlines()
        assert sorted(lines) == sorted(
            [str(1000 + i) for i in range(20)] + [str(2000 + i) for i in range(20)]
        )

        os.write(a, b"progress 50%")  # no end of line: copied as it is after a short wait
        start = time.monotonic()
        assert read_until(out_r, b"progress 50%").endswith(b"progress 50%")
        assert time.monotonic() - start >= HOLD_SECONDS * 0.9
        os.write(b, b"last words")
        os.close(b)  # its end: what it held goes at once
        assert read_until(out_r, b"last words").endswith(b"last words")
    finally:
        forwarder.stop()
        os.close(pipes[0][1])
        os.close(out_r)
        os.close(out_w)
