"""The store itself: keys, the bytes of an entry, FileStore's files and claims."""

from __future__ import annotations

import dataclasses
import enum
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import dispatcher as dp
from dispatcher.store import CorruptEntry, FileStore, StoreError
from dispatcher.store.keys import KeyMaker, NoKey, NotHashable, token
from dispatcher.store.tokens import Tokens


def keys_of(*nodes) -> dict:
    keys: dict = {}
    maker = KeyMaker(keys)
    for node in nodes:
        keys[node] = maker.key_of(node)
    return keys


def scale(x, factor=2):
    return x * factor


@dataclasses.dataclass
class Point:
    x: int
    y: list


class Colour(enum.Enum):
    RED = 1


class Tags(set):
    pass


class Marked(np.ndarray):
    pass


# -- keys -------------------------------------------------------------------------------
SAMPLES = [
    0, 1, -5, 2**70, 1.5, float("nan"), 1j, "é", b"x", None, True, (1, "a"), [1, [2]], {"a": 1},
    {1, 2}, {"b", "a", "c"}, frozenset("ab"), range(3), slice(1, 2), Point(1, [2]), Colour.RED,
    np.arange(5), np.float32(2), np.dtype("f8"), len, int, Tags(["b", "a", "c"]),
]  # fmt: skip


def test_equal_values_have_equal_tokens_across_processes():
    """Another interpreter, with another string hash seed, makes the same tokens."""
    import cloudpickle

    here = [token(v) for v in SAMPLES]
    assert [token(v) for v in SAMPLES] == here
    code = (
        "import pickle, sys; from dispatcher.store.keys import token; "
        "sys.stdout.buffer.write(pickle.dumps([token(v) for v in pickle.loads(sys.stdin.buffer.read())]))"
    )
    import pickle

    other = subprocess.run(
        [sys.executable, "-c", code],
        input=cloudpickle.dumps(SAMPLES),
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    ).stdout
    assert pickle.loads(other) == here


@pytest.mark.parametrize(
    "a, b",
    [(1, 1.0), (1, True), (0, None), ("1", 1), (b"a", "a"), ((1,), [1]), ({1: 2}, {2: 1}),
     ({1}, frozenset([1])),
     (np.arange(3), np.arange(3.0)), (np.zeros((2, 3)), np.zeros((3, 2))), (Point(1, [2]), Point(1, [3])),
     (np.arange(100000), np.arange(1, 100001))],
)  # fmt: skip
def test_different_values_have_different_tokens(a, b):
    assert token(a) != token(b)


def test_what_cannot_be_read_deterministically_is_refused_with_where():
    with pytest.raises(NotHashable, match="lock"):
        token([1, {"k": threading.Lock()}])
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(NotHashable, match="contains itself"):
        token(cycle)
    with pytest.raises(NotHashable, match="generator"):
        token(x for x in ())


def test_a_node_key_covers_function_arguments_dependencies_and_version():
    a, b = dp.Op(scale, 1), dp.Op(scale, 2)
    k = keys_of(a, b, dp.Op(scale, a), dp.Op(scale, b), dp.Op(scale, 1, factor=3), dp.op(version=2)(scale)(1))
    values = list(k.values())
    assert len(set(values)) == len(values)  # all different
    again = dp.Op(scale, 1)
    assert keys_of(again)[again] == k[a]  # the same call, another node: the same key


def test_editing_a_function_body_or_what_it_closes_over_changes_its_key():
    def make(step):
        def f(x):
            return x + step

        return f

    def g(x):
        return x + 1

    def g2(x):
        return x + 2

    g2.__qualname__ = g.__qualname__
    keys = [keys_of(n := dp.Op(func, 1))[n] for func in (make(1), make(2), g, g2)]
    assert len(set(keys)) == 4
    same = [keys_of(n := dp.Op(make(1), 1))[n] for _ in range(2)]
    assert same[0] == same[1] == keys[0]


def test_a_node_that_cannot_be_keyed_says_why_and_so_do_its_dependants():
    bad = dp.Op(scale, threading.Lock())
    down = dp.Op(scale, bad)
    off = dp.op(cache=False)(scale)(1)
    keys: dict = {}
    maker = KeyMaker(keys)
    for n in (bad, down, off):
        keys[n] = maker.key_of(n)
    assert keys == {bad: None, down: None, off: None}
    assert "argument 0" in maker.unkeyed[bad].reason and "lock" in maker.unkeyed[bad].reason
    assert not maker.unkeyed[bad].inherited
    assert maker.unkeyed[down] == NoKey("it depends on node 'scale', which has no key", inherited=True)
    assert "cache=False" in maker.unkeyed[off].reason and maker.unkeyed[off].inherited


def test_op_refuses_a_cache_option_that_is_not_a_boolean():
    with pytest.raises(TypeError, match="cache of op 'scale' must be True or False"):
        dp.op(cache="no")(scale)


# -- entries and FileStore ------------------------------------------------------------------
def test_values_round_trip_and_large_arrays_are_mapped_writable(tmp_path):
    store = FileStore(tmp_path)
    big = np.arange(1_000_000, dtype="f8")
    values = {"a": 1, "b": {"x": [1, 2], "arr": big}, "c": b"x" * 100, "d": None}
    for key, value in values.items():
        store.save(key * 32, value, "f")
    assert store.load("c" * 32) == b"x" * 100 and store.load("d" * 32) is None
    got = store.load("b" * 32)
    np.testing.assert_array_equal(got["arr"], big)
    assert got["arr"].flags.writeable and not got["arr"].flags.owndata  # a view of the mapped file
    got["arr"][0] = -1  # copy on write: the entry is unchanged
    assert store.load("b" * 32)["arr"][0] == 0
    with pytest.raises(KeyError):
        store.load("e" * 32)
    listed = sorted((e.key[0], e.function) for e in store.entries())
    assert listed == [("a", "f"), ("b", "f"), ("c", "f"), ("d", "f")]


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_a_damaged_entry_is_detected_never_read_as_a_value(tmp_path, damage):
    store = FileStore(tmp_path)
    key = "ab" * 16
    store.save(key, {"v": np.arange(300_000)}, "f")
    path = store._entry(key)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "garbage":
        data = bytearray(b"not an entry at all")
    else:
        data = bytearray()
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(CorruptEntry):
        store.load(key)


def test_a_value_that_cannot_be_unpickled_here_is_a_corrupt_entry(tmp_path):
    script = (
        "import sys; sys.path.insert(0, sys.argv[2]); "
        "import mod, dispatcher as dp; dp.FileStore(sys.argv[1]).save('cd' * 16, mod.Thing(), 'f')"
    )
    (tmp_path / "mod.py").write_text("class Thing:\n    pass\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "s"), str(tmp_path)], check=True)
    with pytest.raises(CorruptEntry, match="cannot be unpickled"):
        FileStore(tmp_path / "s").load("cd" * 16)


def test_a_store_pickles_as_its_path():
    import pickle

    store = FileStore("/some/where", lease=5)
    again = pickle.loads(pickle.dumps(store))
    assert again.path == "/some/where" and again.lease == 5.0


def test_a_path_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a dispatcher store"):
        list(FileStore(tmp_path).entries())


# -- claims ---------------------------------------------------------------------------------
def test_a_claim_is_held_until_released_or_its_run_ends(tmp_path):
    one, two = FileStore(tmp_path), FileStore(tmp_path)
    run1, run2 = one.begin_run(), two.begin_run()
    try:
        assert one.claim("k" * 32, run1) and one.claim("k" * 32, run1)  # again: still ours
        assert not two.claim("k" * 32, run2)
        one.release("k" * 32, run1)
        assert two.claim("k" * 32, run2)
        two.release("k" * 32, run1)  # not run1's claim: it stays
        assert not one.claim("k" * 32, run1)
        two.end_run(run2)  # its claims lapse with it
        assert one.claim("k" * 32, run1)
    finally:
        one.end_run(run1)


def test_the_claim_of_a_dead_process_lapses_at_once(tmp_path):
    code = (
        "import sys, os, dispatcher as dp; s = dp.FileStore(sys.argv[1]); r = s.begin_run(); "
        "s.claim('k' * 32, r); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    store = FileStore(tmp_path)
    run = store.begin_run()
    try:
        assert store.claim("k" * 32, run)
    finally:
        store.end_run(run)


def test_the_claim_of_a_run_whose_lease_is_old_lapses(tmp_path):
    store = FileStore(tmp_path, lease=30)
    other = "elsewhere.example.1234.abcdef"
    os.makedirs(tmp_path / "runs")
    os.makedirs(tmp_path / "claims")
    (tmp_path / "runs" / other).write_text("{}")
    os.symlink(other, tmp_path / "claims" / ("k" * 32))
    run = store.begin_run()
    try:
        assert not store.claim("k" * 32, run)  # another host's live run
        os.utime(tmp_path / "runs" / other, (0, 0))
        assert store.claim("k" * 32, run)  # its lease ran out
    finally:
        store.end_run(run)


def test_a_claim_lapses_by_its_holders_lease_not_the_readers(tmp_path):
    """A run with a long lease, renewing rarely, is alive for a reader with a short one."""
    import time

    holder = FileStore(tmp_path, lease=600)
    run = holder.begin_run()
    try:
        remote = run.replace(run.split(".")[0], "elsewhere-host", 1)  # as if from another host
        os.rename(tmp_path / "runs" / run, tmp_path / "runs" / remote)
        old = time.time() - 120  # renewed two minutes ago: within 600 s
        os.utime(tmp_path / "runs" / remote, (old, old))
        assert FileStore(tmp_path, lease=60).run_alive(remote)
        os.utime(tmp_path / "runs" / remote, (0, 0))
        assert not FileStore(tmp_path, lease=60).run_alive(remote)
    finally:
        holder.end_run(run)


def test_a_lease_is_aged_by_the_file_systems_clock_not_this_hosts(tmp_path, monkeypatch):
    """On a shared file system the hosts' clocks may differ: a lease another host
    renewed just now is alive, whatever this host's clock says."""
    import time

    store = FileStore(tmp_path, lease=30)
    other = "elsewhere.example.1234.abcdef"
    os.makedirs(tmp_path / "runs")
    (tmp_path / "runs" / other).write_text("{}")  # stamped by the file system, now
    ahead = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: ahead)  # this host's clock is an hour ahead
    assert store.run_alive(other)
    os.utime(tmp_path / "runs" / other, (0, 0))
    assert not store.run_alive(other)


# -- python -m dispatcher.store -----------------------------------------------------------
def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.store", *map(str, args)], capture_output=True, text=True
    )


def test_the_command_lists_entries_by_function_and_prunes(tmp_path):
    store = FileStore(tmp_path)
    dp.run(dp.SerialExecutor(), [dp.Op(scale, i) for i in range(3)] + [dp.Op(sum, [1, 2])], store=store)
    listing = _cli(tmp_path)
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["function", "entries", "bytes", "last", "used"]
    assert [line.split()[:2] for line in lines[1:]] in (
        [["scale", "3"], ["sum", "1"], ["total", "4"]],
        [["sum", "1"], ["scale", "3"], ["total", "4"]],
    )
    old = next(e for e in store.entries() if e.function == "sum")
    os.utime(store._entry(old.key), (0, 0))  # unused since 1970
    (tmp_path / "entries" / "not-an-entry").mkdir()  # something else put there is left alone
    abandoned = tmp_path / "entries" / ".tmp.abab.1.x"
    abandoned.write_bytes(b"half")
    os.utime(abandoned, (0, 0))
    dry = _cli(tmp_path, "--older-than", "30d", "--dry-run")
    assert "would remove 2 entries" in dry.stdout and len(list(store.entries())) == 4
    assert "removed 2 entries" in _cli(tmp_path, "--older-than", "30d").stdout
    assert sorted(e.function for e in store.entries()) == ["scale"] * 3 and not abandoned.exists()
    assert "removed 3 entries" in _cli(tmp_path, "--function", "scale").stdout
    assert "no entries" in _cli(tmp_path).stdout
    assert (tmp_path / "entries" / "not-an-entry").is_dir()


def test_the_command_refuses_what_is_not_a_store(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    done = _cli(tmp_path)
    assert done.returncode == 2 and "not a dispatcher store" in done.stderr
    assert _cli(tmp_path / "missing").returncode == 2
    bad_age = _cli(tmp_path, "--older-than", "soon")
    assert bad_age.returncode == 2 and "not an age" in bad_age.stderr


def test_a_set_and_a_frozenset_argument_have_different_keys():
    nodes = [dp.Op(len, {1}), dp.Op(len, frozenset({1})), dp.Op(len, [{1}]), dp.Op(len, [frozenset({1})])]
    keys = keys_of(*nodes)
    assert len(set(keys.values())) == 4


# -- what a key sees of code ----------------------------------------------------------------
def _load_module(path, name: str, source: str):
    """``source`` as the module ``name``, written to ``path`` and imported afresh."""
    import importlib.util

    file = path / f"{name}.py"
    file.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def _keys_in(module, *calls) -> list:
    """The keys of ``Op(getattr(module, name), *args)`` for ``(name, args)``, all made by
    one KeyMaker, in the order given (each function's token is then kept for the run)."""
    keys: dict = {}
    maker = KeyMaker(keys)
    out = []
    for name, args in calls:
        func = module
        for part in name.split("."):
            func = getattr(func, part)
        node = dp.Op(func, *args)
        keys[node] = maker.key_of(node)
        assert keys[node] is not None, maker.unkeyed[node]
        out.append(keys[node])
    return out


EDITS = {
    "mutual recursion": (
        """
        def is_even(n):
            return True if n == 0 else is_odd(n - 1)

        def is_odd(n):
            return False if n == 0 else is_even(n - 1)
        """,
        ("return False if n == 0", "return True if n == 0 and False"),
    ),
    "a helper under lru_cache": (
        """
        import functools

        @functools.lru_cache
        def helper(n):
            return n + 1

        def is_even(n):
            return helper(n) % 2 == 1

        def is_odd(n):
            return not is_even(n)
        """,
        ("return n + 1", "return n + 2"),
    ),
    "a class of its module": (
        """
        class Model:
            def __init__(self, n):
                self.n = n

            def score(self):
                return self.n * 2

        def is_even(n):
            return Model(n).score() % 4 == 0

        def is_odd(n):
            return not is_even(n)
        """,
        ("return self.n * 2", "return self.n * 3"),
    ),
    "a sibling method": (
        """
        class Model:
            def fit(self, n):
                return self.helper(n)

            def helper(self, n):
                return n

        model = Model()
        is_even = model.fit

        def is_odd(n):
            return not is_even(n)
        """,
        ("return n\n", "return -n\n"),
    ),
    "a tuple constant": (
        """
        LEVELS = (1, 2, (3, "x"))

        def is_even(n):
            return n in LEVELS

        def is_odd(n):
            return not is_even(n)
        """,
        ('(3, "x")', '(3, "y")'),
    ),
    "a static method against a class method": (
        """
        class A:
            @staticmethod
            def f(x, *rest):
                return x

        def is_even(n):
            return A.f(n) == n

        def is_odd(n):
            return not is_even(n)
        """,
        ("@staticmethod", "@classmethod"),
    ),
    "an enum member's value": (
        """
        import enum

        class Colour(enum.Enum):
            RED = 1

        def is_even(n):
            return Colour.RED.value * n % 2 == 0

        def is_odd(n):
            return not is_even(n)
        """,
        ("RED = 1", "RED = 2"),
    ),
    "a partial method's arguments": (
        """
        import functools

        def _scaled(self, x, k):
            return x * k

        class A:
            h = functools.partialmethod(_scaled, k=2)

        def is_even(n):
            return A().h(n) % 4 == 0

        def is_odd(n):
            return not is_even(n)
        """,
        ("k=2", "k=3"),
    ),
    "a name bound to another module's function": (
        """
        from math import sqrt as op

        def is_even(n):
            return op(n) > 1

        def is_odd(n):
            return not is_even(n)
        """,
        ("sqrt as op", "exp as op"),
    ),
    "a partial of the module": (
        """
        import functools

        def base(k, x):
            return x * k

        helper = functools.partial(base, 2)

        def is_even(n):
            return helper(n) % 4 == 0

        def is_odd(n):
            return not is_even(n)
        """,
        ("partial(base, 2)", "partial(base, 3)"),
    ),
    "a class of the module held in a default": (
        """
        class Model:
            def predict(self, x):
                return x + 1

        def is_even(n, cls=Model):
            return cls().predict(n) % 2 == 0

        def is_odd(n):
            return not is_even(n)
        """,
        ("x + 1", "x + 2"),
    ),
    "a class attribute against a module global": (
        """
        class A:
            b = 1

        def is_even(n):
            try:
                return A.b == 1
            except AttributeError:
                return False

        def is_odd(n):
            return not is_even(n)
        """,
        ("            b = 1\n", "            pass\n\n        b = 1\n"),
    ),
    "a class as the function": (
        """
        class is_even:
            def __init__(self, n):
                self.value = n % 2 == 0

        def is_odd(n):
            return not is_even(n).value
        """,
        ("n % 2 == 0", "n % 2 == 1"),
    ),
}


@pytest.mark.parametrize("what", list(EDITS))
def test_editing_code_a_function_reaches_changes_its_key_whatever_was_read_first(tmp_path, what):
    source, (old, new) = EDITS[what]
    assert old in source
    before = _load_module(tmp_path, f"edits_{len(what)}a", source)
    after = _load_module(tmp_path, f"edits_{len(what)}a", source.replace(old, new))
    for order in ([("is_even", (4,)), ("is_odd", (4,))], [("is_odd", (4,)), ("is_even", (4,))]):
        assert _keys_in(before, *order) == _keys_in(before, *order)  # deterministic
        changed = [a != b for a, b in zip(_keys_in(before, *order), _keys_in(after, *order))]
        assert changed == [True, True], order


def test_a_key_does_not_depend_on_what_was_keyed_before_it(tmp_path):
    """Mutual recursion through an alias: keying another node first changes nothing,
    and rebinding the alias changes the key whatever was keyed first."""
    source = """
        def a(x):
            return x

        def q(x):
            return r(x) + 100

        def r(x):
            return a(x) + b(x)

        def b(x):
            return c(x)

        def c(x):
            return h(x + 10) if x < 0 else 0

        h = r
        """
    before = _load_module(tmp_path, "alias_a", source)
    after = _load_module(tmp_path, "alias_a", source.replace("h = r", "h = q"))
    orders = [
        [("q", (-1,))],
        [("a", (1,)), ("q", (-1,))],
        [("b", (1,)), ("q", (-1,))],
        [("c", (1,)), ("q", (-1,))],
    ]
    keys_before = {_keys_in(before, *order)[-1] for order in orders}
    keys_after = {_keys_in(after, *order)[-1] for order in orders}
    assert len(keys_before) == 1 and len(keys_after) == 1 and keys_before != keys_after


def test_what_was_read_outside_code_does_not_stand_in_for_it_inside(tmp_path):
    """A partial keyed as a node's function first, then named by a function: its
    module's class is read by content in the function, whatever was keyed first."""
    source = """
        import functools

        class Foo:
            def scale(self, x):
                return x * 2

        def g(foo, x):
            return foo.scale(x)

        p = functools.partial(g, Foo())

        def f(x):
            return p(x) + 100
        """
    before = _load_module(tmp_path, "partial_a", source)
    after = _load_module(tmp_path, "partial_a", source.replace("x * 2", "x * 3"))
    for order in ([("f", (1,))], [("p", (1,)), ("f", (1,))]):
        assert _keys_in(before, *order)[-1] != _keys_in(after, *order)[-1]
    assert _keys_in(before, ("f", (1,)))[-1] == _keys_in(before, ("p", (1,)), ("f", (1,)))[-1]


def test_a_bound_method_is_read_with_the_class_of_its_object(tmp_path):
    source = """
        class Base:
            def run(self, x):
                return self.step(x)

            def step(self, x):
                return x

        class Child(Base):
            def step(self, x):
                return x * 2

        child = Child()
        """
    before = _load_module(tmp_path, "bound_a", source)
    after = _load_module(tmp_path, "bound_a", source.replace("x * 2", "x * 3"))
    key = lambda module: keys_of(n := dp.Op(module.child.run, 1))[n]  # noqa: E731
    assert key(before) != key(after) and key(before) == key(before)


def test_code_read_in_a_value_being_read_is_keyed(tmp_path):
    """A callable object holding a function that names the object itself."""
    source = """
        class Call:
            def __init__(self, fn):
                self.fn = fn

            def __call__(self, x):
                return self.fn(x)

        def g(x):
            return x if obj is None else x + 1

        obj = Call(g)
        """
    module = _load_module(tmp_path, "holding_a", source)
    first = _keys_in(module, ("obj", (1,)))
    assert first == _keys_in(module, ("g", (1,)), ("obj", (1,)))[-1:]


def test_functions_that_all_call_each_other_are_keyed_at_once(tmp_path):
    """Twenty-five functions each calling all the others: one component, read once."""
    names = [f"f{i}" for i in range(25)]
    body = " + ".join(f"{n}(x - 1)" for n in names)
    source = "\n".join(f"def {n}(x):\n    return 0 if x <= 0 else {body}\n" for n in names)
    module = _load_module(tmp_path, "dense", source)
    keys = _keys_in(module, *[(n, (1,)) for n in names])
    assert len(set(keys)) == 25
    tokens = Tokens()
    assert all(len(tokens.function(getattr(module, n))) == 17 for n in names)  # a hash, not the code


def test_code_is_read_the_same_in_another_interpreter(tmp_path):
    """Mutual recursion and classes give the same keys in a process with another hash seed."""
    source, _ = EDITS["mutual recursion"]
    classes, _ = EDITS["a class of its module"]
    _load_module(tmp_path, "same_a", source)
    (tmp_path / "same_b.py").write_text(
        textwrap.dedent(classes)
        + textwrap.dedent(
            """
            import dataclasses

            @dataclasses.dataclass(frozen=True)
            class Tag:
                name: str

            TAGS = frozenset({Tag("alpha"), Tag("beta"), Tag("gamma")})

            def tagged(n, tags=TAGS, funcs=frozenset({is_odd, is_even})):
                return len(tags) + len(funcs) + n
            """
        )
    )
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        import dispatcher as dp, same_a, same_b
        from dispatcher.store.keys import KeyMaker
        keys = {}
        maker = KeyMaker(keys)
        for func in (same_a.is_odd, same_a.is_even, same_b.is_even, same_b.Model, same_b.tagged):
            node = dp.Op(func, 4)
            keys[node] = maker.key_of(node)
            print(keys[node])
        """
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.split()
        for seed in ("1", "2", "3")
    ]
    assert runs[0] == runs[1] == runs[2] and len(set(runs[0])) == 5 and "None" not in runs[0]


def test_objects_that_share_a_name_or_a_wrapped_function_but_differ_have_different_tokens():
    import datetime
    import functools
    import zoneinfo

    def local_class(step):
        class Step:
            def apply(self, x):
                return x + step

        return Step

    class Scaled:
        def __init__(self, func, factor):
            self.__wrapped__ = func
            self.factor = factor

        def __call__(self, x):
            return self.__wrapped__(x) * self.factor

    paris = zoneinfo.ZoneInfo("Europe/Paris")
    winter = datetime.datetime(2026, 1, 5, 12, 0)
    fixed = datetime.timezone(datetime.timedelta(hours=1))
    assert winter.replace(tzinfo=paris).isoformat() == winter.replace(tzinfo=fixed).isoformat()
    pairs = [
        (local_class(1)(), local_class(2)()),  # one qualified name, two classes
        (Scaled(scale, 2), Scaled(scale, 3)),  # one wrapped function, two states
        (np.array([[1, 2]]).view(Marked), np.array([[1, 2]])),  # an array of another type
        (np.ma.masked_array([1, 2], mask=[0, 1]), np.ma.masked_array([1, 2], mask=[1, 0])),
        (np.zeros(2, dtype=[("a", "i4"), ("b", "i4")]), np.zeros(2, dtype=[("a", "i4"), ("c", "i4")])),
        (np.zeros(1, dtype=[("a", "i4"), ("b", "i4")])[0], np.zeros(1, dtype=[("b", "i4"), ("a", "i4")])[0]),
        (winter.replace(tzinfo=paris), winter.replace(tzinfo=fixed)),
        (winter.replace(fold=0), winter.replace(fold=1)),
        (memoryview(b"abcd"), memoryview(b"abcd").cast("i")),
        (functools.partial(scale, factor=2), functools.partial(scale, factor=3)),
    ]
    for a, b in pairs:
        assert token(a) != token(b), (a, b)
    assert token(local_class(1)()) == token(local_class(1)())


def test_values_that_once_broke_keying_are_keyed_or_refused_clearly():
    flags = enum.Flag("Flags", "A B")
    assert token(flags(0)) != token(flags.A)  # a flag without a name
    many = Tags(f"tag{i}" for i in range(50))
    assert token(many) == token(Tags(sorted(many, reverse=True)))  # not in hash order

    class Raises:
        def __dask_tokenize__(self):
            raise RuntimeError("no token today")

    bad, fine = dp.Op(scale, Raises()), dp.Op(scale, 1)
    keys: dict = {}
    maker = KeyMaker(keys)
    for n in (bad, fine):
        keys[n] = maker.key_of(n)
    assert keys[bad] is None and "RuntimeError: no token today" in maker.unkeyed[bad].reason
    assert keys[fine] is not None


def test_a_recursive_function_nested_in_another_is_keyed():
    def outer(n):
        def count(k):
            return 0 if k == 0 else 1 + count(k - 1)

        return count

    assert keys_of(n := dp.Op(outer(3), 3))[n] is not None


def _closure_graphs(rng, count: int):
    """Random graphs of closures of one code (a label, and an ordered list of the
    closures they call): ``(functions, labels, successors)`` of each graph."""

    def make(label, calls):
        def node(x):
            return [label] + [call(x) for call in calls]

        return node

    graphs = []
    for _ in range(count):
        n = rng.randint(1, 7)
        calls: list = [[] for _ in range(n)]
        labels = [rng.randint(0, 1) for _ in range(n)]
        funcs = [make(labels[i], calls[i]) for i in range(n)]
        succ = [[rng.randrange(n) for _ in range(rng.choice([0, 1, 1, 2, 2, 3]))] for _ in range(n)]
        for i in range(n):
            calls[i].extend(funcs[j] for j in succ[i])
        graphs.append((funcs, labels, succ))
    return graphs


def test_tokens_of_code_in_cycles_are_equal_only_for_code_that_computes_alike():
    """Closures of one code calling each other in random graphs: two get one token only
    if they unfold alike (bisimilar), and a token does not depend on the keying order."""
    import random

    rng = random.Random(20261204)
    graphs = _closure_graphs(rng, 300)
    funcs, labels, succ = [], [], []
    for g_funcs, g_labels, g_succ in graphs:
        base = len(funcs)
        funcs += g_funcs
        labels += g_labels
        succ += [[base + j for j in s] for s in g_succ]
    classes = labels[:]  # bisimulation classes, by partition refinement
    while True:
        signature = [(classes[i], tuple(classes[j] for j in succ[i])) for i in range(len(funcs))]
        numbers = {s: k for k, s in enumerate(sorted(set(signature)))}
        refined = [numbers[s] for s in signature]
        if len(set(refined)) == len(set(classes)):
            break
        classes = refined
    shared = Tokens()
    tokens = {}
    for g_funcs, _, _ in graphs:
        order = list(range(len(g_funcs)))
        rng.shuffle(order)
        reader = shared if rng.random() < 0.5 else Tokens()
        for i in order:
            tokens[id(g_funcs[i])] = reader.function(g_funcs[i])
    first: dict = {}
    for i, f in enumerate(funcs):
        j = first.setdefault(tokens[id(f)], i)
        assert classes[i] == classes[j], f"one token for code that computes otherwise: nodes {i} and {j}"
    for g_funcs, _, _ in graphs[:100]:  # another order, another reader: the same tokens
        order = list(range(len(g_funcs)))
        rng.shuffle(order)
        reader = Tokens()
        assert {i: reader.function(g_funcs[i]) for i in order} == {
            i: tokens[id(f)] for i, f in enumerate(g_funcs)
        }
