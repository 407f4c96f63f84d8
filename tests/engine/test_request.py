"""A request alone: built from a Dataflow and its nodes' runners, with no executor in sight.

The runners here are the real Batcher and Streamer, started by the test; the test plays the
executor's one part a request needs, handing finished items back on the request's loop.
"""

from __future__ import annotations

import asyncio
from functools import partial

import fns  # noqa: F401 - registers the test_stream kind
import numpy as np
import pytest

from engine.batcher import Batcher
from engine.compiler import compile_file
from engine.dataflow import Dataflow
from engine.errors import InvalidInput, NodeError
from engine.options import RequestOptions
from engine.placement import GIB, Device
from engine.request import Launches, RequestRun
from engine.runner import Done, Runner
from engine.streamer import Streamer

CPU = [Device("cpu", "cpu", 32 * GIB)]
FP = "{dtype: FP32, shape: [1]}"
PIPELINE = f"""
apiVersion: pipectl/v1
name: t
inputs: {{x: {FP}, text: {{dtype: BYTES, shape: [1], optional: true}}}}
outputs: {{y: b.y, echoed: s.text}}
nodes:
  a:
    kind: python
    params: {{function: "fns:double", inputs: {{x: {FP}}}, outputs: {{y: {FP}}}}}
    inputs: {{x: $inputs.x}}
    batching: {{max_queue_delay_ms: 0}}
  b:
    kind: python
    params: {{function: "fns:fail_on", inputs: {{x: {FP}}}, outputs: {{y: {FP}}}}}
    inputs: {{x: a.y}}
    batching: {{max_queue_delay_ms: 0}}
  s:
    kind: test_stream
    inputs: {{text: $inputs.text}}
"""


def hand_back(name: str, done: list[Done]) -> None:
    """What the executor does with a finished batch: give each item back on its loop."""

    def on_loop() -> None:
        launches = Launches()
        for d in done:
            run = d.item.ticket
            assert isinstance(run, RequestRun)
            if run.finished:
                continue
            if d.error is not None:
                run.fail(d.error)
            else:
                run.node_done(name, d.outputs, d.queue_ns, d.batch_size, d.compute_ns, launches)
        launches.flush()

    done[0].item.ticket.loop.call_soon_threadsafe(on_loop)


@pytest.fixture
def parts(write_pipeline):
    """The plan and a started runner per node, stopped after the test."""
    plan = compile_file(write_pipeline(PIPELINE), devices=CPU)
    runners: dict[str, Runner] = {}
    for name, node in plan.nodes.items():
        runner_cls = Streamer if node.streaming else Batcher
        runners[name] = runner_cls(node, plan.base_dir, partial(hand_back, name))
        runners[name].start()
    for runner in runners.values():
        runner.wait_loaded()
    yield plan, runners
    for runner in runners.values():
        runner.stop(drain=False)


def run(plan, runners, inputs, outputs=None, *, streaming=False, request_id="r1"):
    """Begin one request on a fresh loop and return its result or its events."""

    async def main():
        loop = asyncio.get_running_loop()
        options = RequestOptions(request_id=request_id, trace=True)
        request = RequestRun(Dataflow(plan, outputs), runners, loop, options, streaming)
        request.begin(inputs)
        if not streaming:
            return await request.future
        events = []
        while not events or not events[-1].final:
            event = await request.events.get()
            if isinstance(event, BaseException):
                raise event
            events.append(event)
        return events

    return asyncio.run(main())


def test_a_request_runs_on_runners_alone(parts):
    plan, runners = parts
    result = run(plan, runners, {"x": np.array([3.0], np.float32)}, ["y"])
    assert result.outputs["y"].tolist() == [12.0]  # doubled twice
    assert [t.node for t in result.trace] == ["a", "b"]


def test_a_node_error_from_a_runner_fails_the_request_by_name(parts):
    plan, runners = parts
    with pytest.raises(NodeError, match="node 'b' failed on request 'r7'"):
        run(plan, runners, {"x": np.array([6.5], np.float32)}, ["y"], request_id="r7")


def test_a_streaming_node_sends_deltas_then_the_whole(parts):
    plan, runners = parts
    inputs = {"x": np.array([1.0], np.float32), "text": np.array([b"hey"], dtype=object)}
    events = run(plan, runners, inputs, ["echoed"], streaming=True)
    deltas = [e.outputs["echoed"].tolist() for e in events[:-1]]
    assert deltas == [[b"h"], [b"e"], [b"y"]]
    assert events[-1].result.outputs["echoed"].tolist() == [b"hey"]


def test_unknown_inputs_are_refused_before_any_runner_sees_them(parts):
    plan, runners = parts
    with pytest.raises(InvalidInput, match="unknown input 'z'; inputs: x, text"):
        run(plan, runners, {"x": np.array([1.0], np.float32), "z": np.array([1.0])}, ["y"])
    assert runners["a"].statistics()["success"] == 0
