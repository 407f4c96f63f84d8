"""The dynamic batcher alone: batch forming, timing, priorities, limits, failure isolation."""

from __future__ import annotations

import json
import threading
import time

import fns
import numpy as np
import pytest

from engine.batcher import Batcher, Done, Ticket, WorkItem
from engine.compiler import compile_file
from engine.errors import DeadlineExceeded, NodeError, Unavailable
from engine.placement import GIB, Device
from engine.plan import NodePlan

CPU = [Device("cpu", "cpu", 32 * GIB)]


@pytest.fixture
def node_plan(write_pipeline):
    """A one-node pipeline calling fns.<function> with the given batching; returns its NodePlan."""

    def make(function: str, kwargs: dict | None = None, instances: int = 1, **batching) -> NodePlan:
        path = write_pipeline(
            f"""
apiVersion: pipectl/v1
name: one
inputs: {{x: {{dtype: FP32, shape: [1]}}}}
outputs: {{y: n.y}}
nodes:
  n:
    kind: python
    params:
      function: fns:{function}
      inputs: {{x: {{dtype: FP32, shape: [1]}}}}
      outputs: {{y: {{dtype: FP32, shape: [1]}}}}
      kwargs: {json.dumps(kwargs or {})}
    inputs: {{x: $inputs.x}}
    batching: {json.dumps(batching)}
    placement: {{device: cpu, instances: {instances}}}
"""
        )
        return compile_file(path, devices=CPU).nodes["n"]

    return make


class Collector:
    """An on_done callback that records each batch's results and when they came."""

    def __init__(self) -> None:
        self.done: list[Done] = []
        self.times: list[float] = []
        self._cond = threading.Condition()

    def __call__(self, done: list[Done]) -> None:
        with self._cond:
            self.done.extend(done)
            self.times.extend(time.monotonic() for _ in done)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 5.0) -> list[Done]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.done) >= count, timeout), self.done
            return list(self.done)


def items(*values: float, priority: int = 0, deadline_ns: int = 0) -> list[WorkItem]:
    return [
        WorkItem({"x": np.array([v], np.float32)}, f"r{v:g}", Ticket(), priority, deadline_ns)
        for v in values
    ]


@pytest.fixture
def running():
    """Start batchers and stop them after the test."""
    started: list[Batcher] = []

    def start(plan: NodePlan, collector: Collector) -> Batcher:
        batcher = Batcher(plan, None, collector)
        batcher.start()
        batcher.wait_loaded()
        started.append(batcher)
        return batcher

    yield start
    for batcher in started:
        batcher.stop(drain=False)


def test_full_batches_go_at_once_and_the_rest_waits_for_the_delay(node_plan, running):
    out = Collector()
    # a delay no test run reaches: the 8 items of full batches can only come back by not waiting
    batcher = running(node_plan("double", max_batch_size=4, max_queue_delay_ms=600_000), out)
    batcher.put(items(*range(10)))
    done = out.wait(8, timeout=fns.WAIT_S)
    assert sorted(float(d.outputs["y"][0]) for d in done) == [2.0 * v for v in range(8)]
    assert batcher.statistics()["batch_sizes"] == {4: 2} and batcher.queued() == 2
    assert all(d.queue_ns >= 0 and d.compute_ns > 0 for d in done)


def test_a_partial_batch_waits_for_max_queue_delay_ms(node_plan, running):
    out = Collector()
    batcher = running(node_plan("double", max_batch_size=4, max_queue_delay_ms=300), out)
    start = time.monotonic()
    batcher.put(items(1, 2))
    done = out.wait(2)
    assert batcher.statistics()["batch_sizes"] == {2: 1}
    # a lower bound only: a busy machine makes the wait longer, never shorter
    assert min(out.times) - start >= 0.3
    assert all(d.queue_ns >= 300_000_000 for d in done)


def test_preferred_batch_size_dispatches_without_waiting(node_plan, running):
    out = Collector()
    plan = node_plan(
        "double", max_batch_size=8, max_queue_delay_ms=600_000, preferred_batch_sizes=[2, 4]
    )
    batcher = running(plan, out)
    batcher.put(items(1, 2, 3, 4, 5, 6, 7))
    out.wait(6, timeout=fns.WAIT_S)  # waiting for the delay would take 10 minutes
    assert batcher.statistics()["batch_sizes"] == {2: 1, 4: 1}  # largest preferred first
    assert batcher.queued() == 1  # one item left, waiting for a fuller batch


def test_zero_delay_takes_what_is_there(node_plan, running):
    out = Collector()
    batcher = running(node_plan("double", max_batch_size=8, max_queue_delay_ms=0), out)
    batcher.put(items(1))
    assert out.wait(1, timeout=1.0)[0].batch_size == 1


def test_higher_priority_is_served_first(node_plan, running, gate):
    out = Collector()
    plan = node_plan("gated", max_batch_size=1, max_queue_delay_ms=0, priority_levels=2)
    batcher = running(plan, out)
    batcher.put(items(0))
    gate.wait_entered()  # r0 occupies the worker while the others queue
    batcher.put(items(1, 2, priority=2))
    batcher.put(items(3, 4, priority=1))
    gate.opened.set()
    done = out.wait(5)
    assert [d.item.request_id for d in done] == ["r0", "r3", "r4", "r1", "r2"]


def test_a_full_queue_rejects_in_put_itself(node_plan, running, gate):
    out = Collector()
    plan = node_plan("gated", max_batch_size=1, max_queue_delay_ms=0, max_queue_size=2)
    batcher = running(plan, out)
    batcher.put(items(0))
    gate.wait_entered()
    rejected = batcher.put(items(1, 2, 3))  # two fit the queue behind the busy worker
    assert [r.request_id for r in rejected] == ["r3"] and out.done == []
    error = batcher.queue_full_error(rejected[0])
    assert "max_queue_size=2" in str(error) and error.node == "n" and error.request_id == "r3"
    assert batcher.statistics()["rejected"] == 1
    gate.opened.set()
    assert len(out.wait(3)) == 3


def test_queue_timeout_rejects_items_that_waited_too_long(node_plan, running):
    out = Collector()
    plan = node_plan(
        "sleep", {"seconds": 0.15}, max_batch_size=1, max_queue_delay_ms=0, timeout_ms=50
    )
    batcher = running(plan, out)
    batcher.put(items(1, 2))
    done = {d.item.request_id: d for d in out.wait(2)}
    assert done["r1"].error is None
    assert isinstance(done["r2"].error, DeadlineExceeded)
    assert "timeout_ms=50" in str(done["r2"].error)
    assert batcher.statistics()["expired"] == 1


def test_passed_deadlines_and_cancelled_items_never_reach_the_node(node_plan, running):
    out = Collector()
    batcher = running(node_plan("double", max_batch_size=8, max_queue_delay_ms=0), out)
    fns.calls.clear()
    cancelled = items(1)
    cancelled[0].ticket.cancelled = True
    batcher.put(cancelled + items(2, deadline_ns=time.monotonic_ns() - 1))
    done = out.wait(1)
    time.sleep(0.05)
    assert len(out.done) == 1 and isinstance(done[0].error, DeadlineExceeded)
    assert fns.calls == []  # nothing computed
    stats = batcher.statistics()
    assert stats["cancelled"] == 1 and stats["expired"] == 1 and stats["batches"] == 0


def test_a_failing_item_fails_alone(node_plan, running):
    out = Collector()
    plan = node_plan("fail_on", {"bad": 13}, max_batch_size=8, max_queue_delay_ms=1000)
    batcher = running(plan, out)
    batcher.put(items(10, 11, 12, 13, 14, 15, 16, 17))
    done = {d.item.request_id: d for d in out.wait(8)}
    error = done["r13"].error
    assert isinstance(error, NodeError)
    assert error.node == "n" and error.request_id == "r13"
    assert "'n'" in str(error) and "'r13'" in str(error) and "cannot handle 13" in str(error)
    ok = {rid: float(d.outputs["y"][0]) for rid, d in done.items() if d.error is None}
    assert ok == {f"r{v}": 2.0 * v for v in (10, 11, 12, 14, 15, 16, 17)}
    stats = batcher.statistics()
    assert stats["success"] == 7 and stats["failure"] == 1


def test_a_wrong_result_count_is_caught_and_bisected(node_plan, running):
    out = Collector()
    batcher = running(node_plan("bad_count", max_batch_size=2, max_queue_delay_ms=1000), out)
    batcher.put(items(1, 2))
    done = out.wait(2)
    # one result for two items is an error; each half of one item then gets its own result
    assert {d.item.request_id: float(d.outputs["y"][0]) for d in done} == {"r1": 1.0, "r2": 2.0}
    assert batcher.statistics()["batch_sizes"] == {2: 1}


def test_instances_take_batches_in_parallel(node_plan, running, gate):
    out = Collector()
    plan = node_plan("rendezvous", instances=2, max_batch_size=1, max_queue_delay_ms=0)
    batcher = running(plan, out)
    assert batcher.statistics()["instances"] == 2
    batcher.put(items(1, 2))
    done = out.wait(2, timeout=2 * fns.WAIT_S)
    assert all(d.error is None for d in done), [d.error for d in done]  # both met inside


def test_stop_without_drain_rejects_what_is_queued(node_plan, gate):
    out = Collector()
    batcher = Batcher(node_plan("gated", max_batch_size=1), None, out)
    batcher.start()
    batcher.wait_loaded()
    batcher.put(items(1, 2, 3))
    gate.wait_entered()
    stopper = threading.Thread(target=batcher.stop, kwargs={"drain": False})
    stopper.start()
    errors = out.wait(2, timeout=fns.WAIT_S)  # the two queued ones, while r1 is still inside
    assert len(errors) == 2 and all(isinstance(d.error, Unavailable) for d in errors)
    gate.opened.set()
    stopper.join(timeout=fns.WAIT_S)
    with pytest.raises(Unavailable):
        batcher.put(items(4))


def test_a_node_that_fails_to_load_names_itself(node_plan):
    batcher = Batcher(node_plan("no_such_function"), None, Collector())
    batcher.start()
    with pytest.raises(Unavailable, match=r"node 'n' \(python\) failed to load.*no_such_function"):
        batcher.wait_loaded()
    batcher.stop()
