"""Which of a node's instances serve now, and the restart of one that is lost.

One machinery for both runners (engine/batcher.py, engine/streamer.py). An instance is lost when
its worker dies: the batcher's dispatch thread (KeyboardInterrupt, the one exception a node's
failure isolation lets through) or what a streaming node depends on (the node raises
KeyboardInterrupt, or nodes.errors.InstanceLost when, e.g., the LLM engine's step thread died).
The runner fails what the instance held, naming the node; `lost` marks it down and counts the
restart, and `restart` reloads it in a new thread. While it is down, readiness is false
(`healthy`) and /metrics shows it (`pipectl_node_instances_up`, `..._instance_restarts_total`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from engine.errors import NodeError
from engine.instance import Instance, placement_statistics
from nodes.errors import InstanceLost

log = logging.getLogger("pipectl.instances")


def loses_instance(exc: BaseException) -> bool:
    """Whether `exc`, raised by a node, means its instance is lost (not one item's failure)."""
    return isinstance(exc, KeyboardInterrupt | InstanceLost)


class InstanceHealth:
    """The up/down state of one node's instances and their restarts (module docstring)."""

    def __init__(self, node: str, instances: list[Instance]):
        self.node = node
        self.instances = instances
        self.up = [False] * len(instances)
        self.restarts = 0  # instances lost and restarted here (Ray's own restarts: placement)
        self.threads: list[threading.Thread] = []

    def thread(self, target: Callable, *args, index: int) -> threading.Thread:
        """Start (and keep) a daemon thread of instance `index`."""
        thread = threading.Thread(
            target=target, args=args, name=f"pipectl-{self.node}-{index}", daemon=True
        )
        self.threads.append(thread)
        thread.start()
        return thread

    def lost(self, index: int, exc: BaseException) -> str:
        """Mark instance `index` down and count its restart; returns why, for the errors."""
        why = f"{type(exc).__name__}: {exc}"
        log.error("node %r instance %d lost (%s); restarting it", self.node, index, why)
        self.up[index] = False
        self.restarts += 1
        return why

    def lost_error(self, index: int, request_id: str, why: str, node: str = "") -> NodeError:
        """The error of a request that instance `index` held when it was lost; `node` is the
        request's own name for the node (a runner shared across pipelines serves several)."""
        node = node or self.node
        return NodeError(
            f"node {node!r} instance {index} was lost while computing request "
            f"{request_id!r} ({why}); it is being restarted",
            node=node,
            request_id=request_id,
        )

    def reload(self, index: int, close_first: bool = False) -> bool:
        """Load instance `index` again in the calling thread (closing it first when asked):
        True once it serves; a failed reload is logged and leaves it down."""
        instance = self.instances[index]
        if close_first:
            try:
                instance.close()
            except Exception:  # a broken instance may not close cleanly
                log.exception("node %r instance %d did not close", self.node, index)
        try:
            instance.load()
        except BaseException as exc:  # noqa: BLE001 - logged; the instance stays down
            log.error("node %r instance %d failed to reload: %r", self.node, index, exc)
            return False
        self.up[index] = True
        return True

    def serving(self, index: int) -> bool:
        """Instance `index` is up (loaded, not lost, and, for a Ray actor, not restarting)."""
        return self.up[index] and getattr(self.instances[index], "ready", True)

    @property
    def healthy(self) -> bool:
        """Every instance is serving (False while one is lost and reloading, or its Ray actor
        is being restarted by Ray)."""
        return all(self.serving(i) for i in range(len(self.instances)))

    def statistics(self) -> dict:
        """`instances`, `instances_up`, `restarts` (here and by Ray) and `placement`."""
        placement = placement_statistics(self.instances)
        up = [u and s["ready"] for u, s in zip(self.up, placement["placement"], strict=True)]
        return {
            "instances": len(self.instances),
            "instances_up": sum(up),
            "restarts": self.restarts + placement["restarts"],
            "placement": placement["placement"],
        }
