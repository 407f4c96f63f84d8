"""The recent-window store behind the live page's percentiles and rates."""

from __future__ import annotations

from dataclasses import dataclass

from engine.samples import RecentSamples, percentiles

S = 1_000_000_000
MS = 1_000_000


@dataclass
class Item:
    queue_ns: int
    error: object = None


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert percentiles([7.0]) == {"p50": 7.0, "p90": 7.0, "p99": 7.0}


def test_window_keeps_recent_batches_and_rates_their_items():
    ring = RecentSamples()
    now = 100 * S
    for i in range(10):  # 10 batches of 2 in the last second, compute i ms, queue 1 and 3 ms
        ring.record(now - S + i * S // 10, i * MS, [Item(1 * MS), Item(3 * MS)])
    ring.record(now - S, 5 * MS, [Item(9 * MS, error="failed")])  # failed items don't count
    ring.record(now - 90 * S, 5 * MS, [Item(50 * MS)])  # outside a 60 s window
    ring.record_one(now, 0, 20 * MS)  # a streamed request
    summary = ring.window(60, rate_s=5, now_ns=now)
    assert summary["count"] == 21
    assert summary["rps"] == 21 / 5
    assert summary["queue_ms"] == {"p50": 1.0, "p90": 3.0, "p99": 3.0}
    assert summary["compute_ms"]["p50"] == 5.0 and summary["compute_ms"]["p99"] == 20.0
    assert summary["mean_batch"] == 21 / 11
    assert RecentSamples().window(60, now_ns=now)["queue_ms"] is None


def test_full_rings_rate_over_the_span_they_hold_and_drop_overwritten_items():
    ring = RecentSamples(items=100, batches=50)
    now = 10 * S
    for i in range(300):  # 300 batches of 4 over the last 0.3 s
        ring.record(now - (300 - i) * S // 1000, MS, [Item(i)] * 4)
    summary = ring.window(60, rate_s=5, now_ns=now)
    assert summary["count"] == 50 * 4  # the batches ring keeps the last 50 batches
    assert 3600 < summary["rps"] <= 4000  # 200 items over the ~0.05 s those batches span
    # only the last 25 batches' items are still in the 100-item ring
    assert summary["queue_ms"]["p50"] >= 275 / 1e6
