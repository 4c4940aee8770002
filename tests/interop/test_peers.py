"""The bench's contenders from other tools (the ``peers`` extra, installed by
``make test-interop``): joblib, Ray and Parsl run every suite with the right outputs."""

from __future__ import annotations

from ..test_bench import ran_everywhere, run_peers


def test_the_peers_run_every_suite(tmp_path):
    data = run_peers(tmp_path, "--executors", "python", "--peers")
    for name in ("joblib", "ray", "parsl"):
        ran_everywhere(data, name)
