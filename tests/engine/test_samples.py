"""The recent-window store behind the live page's percentiles and rates."""

from __future__ import annotations

from engine.samples import RecentSamples, percentiles

S = 1_000_000_000


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert percentiles([7.0]) == {"p50": 7.0, "p90": 7.0, "p99": 7.0}


def test_window_keeps_recent_items_and_rates_them():
    ring = RecentSamples(capacity=1000)
    now = 100 * S
    for i in range(10):  # 10 items in the last second, 1 ms queue, i ms compute
        ring.add(now - S + i * S // 10, 1_000_000, i * 1_000_000, 2)
    ring.add(now - 90 * S, 5_000_000, 0, 1)  # outside a 60 s window
    summary = ring.window(60, rate_s=5, now_ns=now)
    assert summary["count"] == 10
    assert summary["rps"] == 10 / 5
    assert summary["queue_ms"]["p99"] == 1.0
    assert summary["compute_ms"]["p50"] == 4.0
    assert summary["mean_batch"] == 2.0
    assert RecentSamples().window(60, now_ns=now)["queue_ms"] is None


def test_a_full_ring_rates_over_the_span_it_holds():
    ring = RecentSamples(capacity=100)
    now = 10 * S
    for i in range(300):  # 300 items over the last 0.3 s: the ring keeps the last 100 (0.1 s)
        ring.add(now - (300 - i) * S // 1000, 0, 0, 1)
    summary = ring.window(60, rate_s=5, now_ns=now)
    assert summary["count"] == 100
    assert 900 < summary["rps"] <= 1000
