"""The executor: pipeline files compiled and run, from a caller's loop and from plain threads."""

from __future__ import annotations

import asyncio
import gc
import time

import fns
import numpy as np
import pytest

from engine.compiler import compile_file
from engine.errors import DeadlineExceeded, InvalidInput, NodeError, QueueFull, Unavailable
from engine.executor import Executor
from engine.placement import GIB, Device
from engine.plan import Source

CPU = [Device("cpu", "cpu", 32 * GIB)]
HEAD = """
apiVersion: pipectl/v1
name: t
inputs: {x: {dtype: FP32, shape: [1]}}
"""
FP = "{dtype: FP32, shape: [1]}"


def fn_node(name: str, function: str, inputs: str, batching: str = "", extra: str = "") -> str:
    """A `python` node `name` calling fns.<function> with x → y."""
    return f"""
  {name}:
    kind: python
    params: {{function: "fns:{function}", inputs: {{x: {FP}}}, outputs: {{y: {FP}}}{extra}}}
    inputs: {{x: {inputs}}}
    batching: {{{batching or "max_queue_delay_ms: 0"}}}
"""


@pytest.fixture
def start(write_pipeline):
    """Compile pipeline text, start an executor on it, stop it after the test."""
    started: list[Executor] = []

    def make(text: str) -> Executor:
        executor = Executor(compile_file(write_pipeline(text), devices=CPU))
        executor.start()
        started.append(executor)
        return executor

    yield make
    for executor in started:
        executor.stop(drain=False)


def x(value: float) -> dict[str, np.ndarray]:
    return {"x": np.array([value], np.float32)}


def test_a_chain_runs_with_its_trace(start):
    ex = start(
        HEAD
        + "outputs: {y: b.y}\nnodes:"
        + fn_node("a", "double", "$inputs.x")
        + fn_node("b", "double", "a.y")
    )
    result = ex.submit_sync(x(3), request_id="req-7", trace=True)
    assert result.request_id == "req-7"
    assert result.outputs["y"].tolist() == [12.0]
    assert [t.node for t in result.trace] == ["a", "b"]
    assert all(t.batch_size == 1 and t.queue_ms >= 0 and t.compute_ms > 0 for t in result.trace)
    assert ex.submit_sync(x(1)).trace == []  # traces only when asked


def test_only_the_nodes_needed_for_the_requested_outputs_run(start):
    ex = start(
        HEAD
        + "outputs: {a: a.y, b: b.y}\nnodes:"
        + fn_node("a", "double", "$inputs.x")
        + fn_node("b", "sleep", "$inputs.x", extra=", kwargs: {seconds: 0}")
    )
    result = ex.submit_sync(x(2), outputs=["a"])
    assert list(result.outputs) == ["a"]
    stats = ex.statistics()
    assert stats["a"]["success"] == 1 and stats["b"]["success"] == 0
    assert set(ex.submit_sync(x(2)).outputs) == {"a", "b"}
    with pytest.raises(InvalidInput, match="unknown output 'c'; outputs: a, b"):
        ex.submit_sync(x(2), outputs=["c"])


def test_branches_run_concurrently_and_join(start, gate):
    ex = start(
        HEAD
        + "outputs: {sum: join.y}\nnodes:"
        + fn_node("left", "rendezvous", "$inputs.x")
        + fn_node("right", "rendezvous", "$inputs.x")
        + f"""
  join:
    kind: python
    params: {{function: "fns:add", inputs: {{a: {FP}, b: {FP}}}, outputs: {{y: {FP}}}}}
    inputs: {{a: left.y, b: right.y}}
"""
    )
    # each branch returns only once the other is inside too: serial branches would fail
    assert ex.submit_sync(x(5)).outputs["sum"].tolist() == [10.0]


def test_requests_from_a_callers_loop_are_batched_and_a_failure_stays_with_its_request(start):
    ex = start(
        HEAD
        + "outputs: {y: f.y}\nnodes:"
        + fn_node("f", "fail_on", "$inputs.x", "max_queue_delay_ms: 200, max_batch_size: 8")
    )

    async def main():
        calls = [ex.submit(x(v), request_id=f"r{v}") for v in range(10, 18)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    error = results[3]
    assert isinstance(error, NodeError) and error.node == "f" and error.request_id == "r13"
    assert "node 'f' failed on request 'r13'" in str(error)
    assert [r.outputs["y"][0] for i, r in enumerate(results) if i != 3] == [
        2.0 * v for v in (10, 11, 12, 14, 15, 16, 17)
    ]
    stats = ex.statistics()["f"]
    assert stats["success"] == 7 and stats["failure"] == 1 and 8 in stats["batch_sizes"]


def _settled(ex: Executor, node: str, count: int) -> dict:
    """The node's statistics once `count` items have left it (success, failure or cancelled)."""
    for _ in range(int(fns.WAIT_S / 0.01)):
        stats = ex.statistics()[node]
        if stats["success"] + stats["failure"] + stats["cancelled"] >= count:
            return stats
        time.sleep(0.01)
    raise AssertionError(f"{node}: {ex.statistics()[node]}")


def test_a_deadline_stops_the_request_where_it_is(start, gate):
    ex = start(
        HEAD
        + "outputs: {y: after.y}\nnodes:"
        + fn_node("slow", "gated", "$inputs.x")
        + fn_node("after", "double", "slow.y")
    )
    with pytest.raises(DeadlineExceeded, match=r"deadline of 0.1 s \(still at node slow\)"):
        ex.submit_sync(x(1), timeout_s=0.1)
    assert gate.entered == 1 and not gate.opened.is_set()  # raised while the node still ran
    gate.opened.set()
    _settled(ex, "slow", 1)
    assert ex.submit_sync(x(2)).outputs["y"].tolist() == [4.0]
    assert ex.statistics()["after"]["success"] == 1  # only the second request went on


def test_deadline_and_cancellation_reach_items_waiting_in_a_queue(start, gate):
    ex = start(
        HEAD
        + "outputs: {y: slow.y}\nnodes:"
        + fn_node("slow", "gated", "$inputs.x", "max_batch_size: 1")
    )

    async def main():
        first = asyncio.create_task(ex.submit(x(1)))
        await asyncio.to_thread(gate.wait_entered)  # the worker is busy with the first
        gone = asyncio.create_task(ex.submit(x(2)))  # the client that goes away
        late = asyncio.create_task(ex.submit(x(3), timeout_s=0.05))
        with pytest.raises(DeadlineExceeded):
            await late
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        gate.opened.set()
        return await first

    assert asyncio.run(main()).outputs["y"].tolist() == [1.0]
    stats = _settled(ex, "slow", 3)
    assert stats["success"] == 1 and stats["cancelled"] == 2  # neither reached the node


CONDITIONAL = (
    HEAD
    + "outputs: {pos: pos.y, after: after.y, opt: opt.y}\nnodes:"
    + fn_node("pos", "double", "$inputs.x")
    + '    when: "x > 0"\n'
    + fn_node("after", "double", "pos.y")
    + f"""
  opt:
    kind: python
    params:
      function: fns:with_default
      inputs: {{x: {FP}, k: {{dtype: FP32, shape: [1], optional: true, default: 100}}}}
      outputs: {{y: {FP}}}
    inputs: {{x: $inputs.x, k: pos.y}}
"""
)


def test_a_condition_skips_its_node_and_what_depends_on_it(start):
    ex = start(CONDITIONAL)
    taken = ex.submit_sync(x(1), trace=True)
    assert {k: v.tolist() for k, v in taken.outputs.items()} == {
        "pos": [2.0],
        "after": [4.0],
        "opt": [3.0],
    }
    skipped = ex.submit_sync(x(-1), trace=True)
    # pos is skipped, so is `after` (its input is absent); opt uses k's default
    assert {k: v.tolist() for k, v in skipped.outputs.items()} == {"opt": [99.0]}
    assert {t.node for t in skipped.trace if t.skipped} == {"pos", "after"}
    assert ex.statistics()["after"]["success"] == 1


def test_a_condition_over_an_absent_optional_input_does_not_hold(start):
    ex = start(
        HEAD
        + "outputs: {gate: gate.y}\nnodes:"
        + fn_node("pos", "double", "$inputs.x")
        + '    when: "x > 0"\n'
        + f"""
  gate:
    kind: python
    params:
      function: fns:with_default
      inputs: {{x: {FP}, k: {{dtype: FP32, shape: [1], optional: true}}}}
      outputs: {{y: {FP}}}
    inputs: {{x: $inputs.x, k: pos.y}}
    when: "k > 5"
"""
    )
    assert ex.submit_sync(x(3)).outputs["gate"].tolist() == [9.0]  # k = 6
    assert ex.submit_sync(x(2)).outputs == {}  # k = 4: not taken
    assert ex.submit_sync(x(-2)).outputs == {}  # k absent: not taken, no error


def test_a_tensor_is_released_after_its_last_consumer(start, gate):
    ex = start(
        HEAD
        + "outputs: {y: c.y}\nnodes:"
        + f"""
  a:
    kind: python
    params: {{function: "fns:make_token", inputs: {{x: {FP}}}, outputs: {{y: BYTES}}}}
    inputs: {{x: $inputs.x}}
  b:
    kind: python
    params: {{function: "fns:token_seen", inputs: {{x: BYTES}}, outputs: {{y: {FP}}}}}
    inputs: {{x: a.y}}
"""
        + fn_node("c", "gated", "b.y")
    )
    future = asyncio.run_coroutine_threadsafe(ex.submit(x(1)), ex.loop())
    gate.wait_entered()  # c is inside; a's output was consumed by b alone
    # b's worker thread may still be leaving its last batch's frame: poll, bounded, while c holds
    # the request, until nothing holds a.y any more
    for _ in range(int(fns.WAIT_S / 0.01)):
        gc.collect()
        if fns.tokens[-1]() is None:
            break
        time.sleep(0.01)
    assert not future.done()
    assert fns.tokens[-1]() is None  # no one holds a.y any more
    gate.opened.set()
    assert future.result(timeout=fns.WAIT_S).outputs["y"].tolist() == [1.0]


@pytest.mark.parametrize(("pipeline_default", "expected"), [(", default: 10", 11.0), ("", 101.0)])
def test_an_optional_pipeline_input_left_out(start, pipeline_default, expected):
    ex = start(
        f"""
apiVersion: pipectl/v1
name: t
inputs:
  x: {FP}
  k: {{dtype: FP32, shape: [1], optional: true{pipeline_default}}}
outputs: {{y: opt.y}}
nodes:
  opt:
    kind: python
    params:
      function: fns:with_default
      inputs: {{x: {FP}, k: {{dtype: FP32, shape: [1], optional: true, default: 100}}}}
      outputs: {{y: {FP}}}
    inputs: {{x: $inputs.x, k: $inputs.k}}
"""
    )
    # the pipeline's default when it has one, else the node port's
    assert ex.submit_sync(x(1)).outputs["y"].tolist() == [expected]
    given = ex.submit_sync({"x": [1.0], "k": [2.0]})
    assert given.outputs["y"].tolist() == [3.0]


def test_invalid_inputs_are_named(start):
    ex = start(HEAD + "outputs: {y: a.y}\nnodes:" + fn_node("a", "double", "$inputs.x"))
    with pytest.raises(InvalidInput, match="missing input 'x'"):
        ex.submit_sync({})
    with pytest.raises(InvalidInput, match=r"input 'x' has shape \[2\] but the pipeline declares"):
        ex.submit_sync({"x": np.array([1, 2], np.float32)})
    with pytest.raises(InvalidInput, match="unknown input 'z'; inputs: x"):
        ex.submit_sync({"x": np.array([1], np.float32), "z": np.array([1])})
    assert ex.submit_sync({"x": [2]}).outputs["y"].dtype == np.float32  # safe cast from int


def test_a_full_queue_rejects_the_request(start):
    ex = start(
        HEAD
        + "outputs: {y: slow.y}\nnodes:"
        + fn_node(
            "slow",
            "sleep",
            "$inputs.x",
            "max_batch_size: 1, max_queue_size: 1",
            ", kwargs: {seconds: 0.1}",
        )
    )

    async def main():
        return await asyncio.gather(*(ex.submit(x(v)) for v in range(4)), return_exceptions=True)

    results = asyncio.run(main())
    rejected = [r for r in results if isinstance(r, QueueFull)]
    assert rejected and "max_queue_size=1" in str(rejected[0]) and rejected[0].node == "slow"
    assert any(not isinstance(r, Exception) for r in results)


STREAMING = """
apiVersion: pipectl/v1
name: s
inputs: {text: {dtype: BYTES, shape: [1]}}
outputs: {text: echo.text, n: count.n}
nodes:
  echo:
    kind: test_stream
    params: {delay_s: 0.0}
    inputs: {text: $inputs.text}
  count:
    kind: python
    params:
      function: fns:length
      inputs: {text: {dtype: BYTES, shape: [1]}}
      outputs: {n: {dtype: INT64, shape: [1]}}
    inputs: {text: echo.text}
"""


def test_streamed_outputs_come_as_deltas_and_flow_on_whole(start):
    ex = start(STREAMING)

    async def main():
        return [e async for e in ex.stream({"text": np.array([b"hello"], dtype=object)})]

    events = asyncio.run(main())
    deltas = [e.outputs["text"][0] for e in events if not e.final]
    assert deltas == [b"h", b"e", b"l", b"l", b"o"]
    final = events[-1]
    assert final.final and final.outputs["text"].tolist() == [b""]  # nothing left to stream
    assert final.outputs["n"].tolist() == [5]  # count saw the whole collected text
    assert final.result.outputs["text"].tolist() == [b"hello"]
    plain = ex.submit_sync({"text": np.array(["hi"], dtype=object)})
    assert plain.outputs["text"].tolist() == [b"hi"] and plain.outputs["n"].tolist() == [2]
    stats = ex.statistics()["echo"]
    assert stats["streaming"] and stats["success"] == 2 and stats["test_stream"] == {"streams": 2}


def test_leaving_a_stream_early_closes_the_node_stream(start):
    ex = start(STREAMING.replace("delay_s: 0.0", "delay_s: 0.05"))
    before = fns.EchoStream.closed_early

    async def main():
        async for event in ex.stream({"text": np.array([b"a long text"], dtype=object)}):
            assert event.outputs["text"].tolist() == [b"a"]
            break
        await asyncio.sleep(0.1)

    asyncio.run(main())
    assert fns.EchoStream.closed_early == before + 1


def test_a_node_that_cannot_load_fails_start(write_pipeline):
    text = HEAD + "outputs: {y: a.y}\nnodes:" + fn_node("a", "no_such_function", "$inputs.x")
    executor = Executor(compile_file(write_pipeline(text), devices=CPU))
    with pytest.raises(Unavailable, match="node 'a' .*no function 'no_such_function'"):
        executor.start()
    with pytest.raises(Unavailable, match="not started"):
        executor.submit_sync(x(1))


def test_requests_from_two_loops_share_one_batch(start):
    ex = start(
        HEAD
        + "outputs: {y: a.y}\nnodes:"
        + fn_node("a", "double", "$inputs.x", "max_batch_size: 2, max_queue_delay_ms: 600000")
    )

    async def main():
        mine = asyncio.create_task(ex.submit(x(1)))
        await asyncio.sleep(0.02)
        # the executor's own loop (submit_sync) sends the second item of the batch
        theirs = await asyncio.to_thread(ex.submit_sync, x(2))
        return (await mine), theirs

    mine, theirs = asyncio.run(main())  # a 10-minute delay: only a filled batch comes back
    assert mine.outputs["y"].tolist() == [2.0] and theirs.outputs["y"].tolist() == [4.0]
    assert ex.statistics()["a"]["batch_sizes"] == {2: 1}


def test_a_view_runs_a_sub_plan_on_the_loaded_instances(write_pipeline):
    """Executor.view serves a sub-plan (one node) with the parent's batchers: nothing loads twice,
    results are right, and an unstarted parent or a plan that is not a sub-plan is refused."""
    import dataclasses

    text = HEAD + "outputs: {y: b.y}\nnodes:" + fn_node("a", "double", "$inputs.x")
    plan = compile_file(write_pipeline(text + fn_node("b", "double", "a.y")), devices=CPU)
    sub = dataclasses.replace(
        plan,
        name="t.a",
        nodes={"a": plan.nodes["a"]},
        outputs={"y": Source("a", "y")},
    )
    parent = Executor(plan)
    with pytest.raises(Unavailable):
        parent.view(sub)
    parent.start()
    try:
        view = parent.view(sub)
        assert view.runners["a"] is parent.runners["a"]
        assert view.submit_sync(x(3)).outputs["y"].tolist() == [6.0]
        assert parent.submit_sync(x(3)).outputs["y"].tolist() == [12.0]
        with pytest.raises(ValueError, match="not a sub-plan"):
            parent.view(dataclasses.replace(sub, nodes={"ghost": plan.nodes["a"]}))
    finally:
        parent.stop(drain=False)
