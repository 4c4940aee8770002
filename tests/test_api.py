"""The entry points: a failing callback beside the progress bar is named."""

from __future__ import annotations

import pytest

import dispatcher as dp


def inc(x):
    return x + 1


def test_failing_on_start_callback_with_progress_bar_reports_the_callback():
    class BrokenStart(dp.Callback):
        def on_start(self, total):
            raise RuntimeError("no start")

    with pytest.raises(dp.DispatcherError, match=r"BrokenStart.on_start.*no start"):
        dp.run(dp.SerialExecutor(), [dp.Op(inc, 1)], callbacks=[BrokenStart()], progress=True)
