"""Computing one batch on one instance, with failure isolation.

A batch that raises is split in halves and retried so that only the failing item fails; a Ray
actor isolates failures itself and returns `ItemFailure`s. An instance that is down (Unavailable:
its actor died) fails the whole batch. KeyboardInterrupt is the one thing not contained: the
instance's dispatch thread is lost and restarted (engine/batcher.py, `Batcher._lost`), and so is
nodes.errors.InstanceLost, a node saying its instance can serve no more (engine/instance_health.py).
"""

from __future__ import annotations

import time

from engine.backends.ray_actor import ItemFailure
from engine.errors import RequestError, Unavailable, node_failure
from engine.instance import Instance
from engine.instance_health import loses_instance
from engine.runner import Done, WorkItem


def failed(item: WorkItem, error: RequestError, queue_ns: int = 0) -> Done:
    """The Done of an item that failed with `error` (its request id filled in)."""
    if not error.request_id:
        error.request_id = item.request_id
    return Done(item, None, error, queue_ns, 0, 0)


def compute_batch(
    node: str, instance: Instance, items: list[WorkItem], dispatched_ns: int, index: int = 0
) -> list[Done]:
    """Run `items` as one batch on `instance` (worker `index` of node `node`; errors name each
    item's own node, which differs for a runner shared across pipelines); one Done per item, in
    order. `dispatched_ns` (monotonic) ends each item's queue time."""
    start = time.monotonic_ns()
    try:
        outputs = instance.run_batch([item.inputs for item in items])
        if len(outputs) != len(items):
            raise ValueError(f"run_batch returned {len(outputs)} results for {len(items)} items")
    except Unavailable as exc:  # the instance is down (its actor died): the whole batch
        queued = dispatched_ns - items[0].enqueued_ns
        return [failed(it, Unavailable(str(exc), node=it.node or node), queued) for it in items]
    except BaseException as exc:  # SystemExit too: a node failure fails only its item
        if loses_instance(exc):
            raise  # not contained: the instance's thread is lost (restarted)
        if len(items) > 1:  # bisect so that only the failing item fails
            half = len(items) // 2
            return compute_batch(node, instance, items[:half], dispatched_ns, index) + (
                compute_batch(node, instance, items[half:], dispatched_ns, index)
            )
        item = items[0]
        error = node_failure(item.node or node, item.request_id, exc)
        return [failed(item, error, dispatched_ns - item.enqueued_ns)]
    compute_ns = time.monotonic_ns() - start
    size = len(items)
    done = []
    for item, out in zip(items, outputs, strict=True):
        queued = dispatched_ns - item.enqueued_ns
        if isinstance(out, ItemFailure):  # isolated by the instance itself (a Ray actor)
            error = node_failure(item.node or node, item.request_id, out.error)
            done.append(failed(item, error, queued))
        else:
            done.append(Done(item, out, None, queued, compute_ns, size, index))
    return done
