"""``python -m dispatcher.store PATH``: what a store holds, and pruning it.

Without options it lists the entries by the function that made them: how many,
how many bytes, and when one was last used (read or written). ``--older-than``
and ``--function`` remove entries (those last used before the age given, those of
the functions named, or both at once); ``--dry-run`` says what would go. Pruning
also removes the files of writes that never ended (their writer was killed) once
they are an hour old. Entries that a run is reading are safe to remove: a file
already open stays readable, and a run that finds an entry gone computes it again.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import sys
import time
from collections.abc import Sequence

from .base import StoreError
from .files import FileStore

__all__ = ["main", "parse_age"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ABANDONED = 3600.0  # seconds after which a temporary file is a write that never ended


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` (or plain seconds) in seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not an age: {text!r} (write it as 30d, 12h, 90m, 45s or 2w)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _list(store: FileStore, out) -> None:
    groups: dict = collections.defaultdict(lambda: [0, 0, 0.0])
    for entry in store.entries():
        group = groups[entry.function]
        group[0] += 1
        group[1] += entry.nbytes
        group[2] = max(group[2], entry.last_used)
    if not groups:
        print(f"{store.path}: no entries", file=out)
        return
    width = max(len("function"), *(len(name) for name in groups))
    print(f"{'function':<{width}}  {'entries':>7}  {'bytes':>10}  last used", file=out)
    for name, (count, nbytes, last) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:<{width}}  {count:>7}  {_size(nbytes):>10}  {_when(last)}", file=out)
    count = sum(g[0] for g in groups.values())
    nbytes = sum(g[1] for g in groups.values())
    print(f"{'total':<{width}}  {count:>7}  {_size(nbytes):>10}", file=out)


def _prune(store: FileStore, older_than: float | None, functions: list, dry_run: bool, out) -> None:
    now = time.time()
    removed = freed = 0
    for entry in store.entries():
        if older_than is not None and now - entry.last_used < older_than:
            continue
        if functions and entry.function not in functions:
            continue
        removed += 1
        freed += entry.nbytes
        if not dry_run:
            store.delete(entry.key)
    for path, mtime in store.temporary_files():
        if now - mtime > _ABANDONED:
            removed += 1
            freed += os.path.getsize(path) if os.path.exists(path) else 0
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):  # its writer ended it meanwhile
                    os.unlink(path)
    verb = "would remove" if dry_run else "removed"
    print(f"{verb} {removed} entries ({_size(freed)}) from {store.path}", file=out)


def main(argv: Sequence[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m dispatcher.store", description="List or prune a dispatcher store."
    )
    parser.add_argument("path", help="the store's directory")
    parser.add_argument(
        "--older-than", type=parse_age, metavar="AGE", help="remove the entries unused for AGE (30d)"
    )
    parser.add_argument(
        "--function", action="append", default=[], metavar="NAME", help="remove the entries of NAME"
    )
    parser.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    args = parser.parse_args(argv)
    store = FileStore(args.path)
    try:
        if args.older_than is None and not args.function:
            if args.dry_run:
                parser.error("--dry-run goes with --older-than or --function")
            _list(store, out)
        else:
            _prune(store, args.older_than, args.function, args.dry_run, out)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
