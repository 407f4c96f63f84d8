"""One node instance as a Ray actor, seen from the serving process.

    instance = RayInstance(node_plan, node_plan.instances[0], base_dir, index=0)
    instance.load()                         # makes the actor; it loads the node on its Ray node
    outputs = instance.run_batch(items)     # one hop per batch (blocking: call from a worker thread)
    async for delta in instance.stream(item): ...   # streaming kinds
    instance.close()

A monitor thread keeps one call pending on the actor (`lifeline`, which returns only when the
actor is closed), so a death is seen at once, with or without traffic. When the actor's process
dies, the call in flight raises `InstanceDied` (its items fail, naming the node), the instance
turns not ready, and the monitor waits for Ray to restart the actor (up to the node's
max_restarts), then counts the restart and turns it ready again. Once Ray has no restarts left,
`dead` is set and every later call raises InstanceDied at once.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

from engine.backends.ray_actor import ItemFailure, NodeActor
from engine.errors import Unavailable
from engine.plan import InstancePlan, NodePlan
from nodes.base import Item
from nodes.registry import get_kind

_remote_class = None  # ray.remote(NodeActor), made once, on first use
_RESTART_POLL_S = 0.2
_serial = itertools.count()


class InstanceDied(Unavailable):
    """The actor's process died (or Ray cannot reach it) while it held a call."""


def actor_options(node: NodePlan) -> dict:
    """Ray actor options of one instance of `node`: its resources and max_restarts."""
    resources = node.backend.resource_dict()
    options: dict = {
        "num_cpus": resources.pop("CPU", 0.0),
        "max_restarts": node.backend.max_restarts,
        "max_task_retries": 0,  # an in-flight batch fails; it is never silently computed twice
    }
    if "GPU" in resources:
        options["num_gpus"] = resources.pop("GPU")
    if "memory" in resources:
        options["memory"] = resources.pop("memory")
    if resources:
        options["resources"] = resources
    return options


class RayInstance:
    """A Ray actor that holds one loaded instance of a node; see the module docstring."""

    def __init__(
        self, node: NodePlan, instance: InstancePlan, base_dir: str | Path | None, index: int = 0
    ):
        self.node = node
        self.index = index
        self.device = instance.device  # as the node sees it inside the actor
        self._base_dir = str(base_dir if base_dir is not None else Path.cwd())
        self._actor = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._generation = 0  # incarnations of the actor seen so far (restarts + 1)
        self._closing = False
        self.dead = False
        self.restarts = 0
        self.info: dict = {}

    # ---- lifecycle ---------------------------------------------------------------------------
    def load(self) -> None:
        """Create the actor and wait until it has loaded the node (Unavailable on failure)."""
        import ray

        global _remote_class
        if _remote_class is None:
            _remote_class = ray.remote(NodeActor)
        kind = get_kind(self.node.kind)
        # `ray list actors` shows which node, instance and serving process an actor belongs to
        host, serial = socket.gethostname(), next(_serial)
        name = f"pipectl.{self.node.name}.{self.index}.{host}.{os.getpid()}.{serial}"
        self._actor = _remote_class.options(name=name, **actor_options(self.node)).remote(
            kind, self.node.params, self._base_dir, self.device
        )
        try:
            self.info = ray.get(self._actor.info.remote())
        except ray.exceptions.RayError as exc:
            self.dead = True
            raise Unavailable(
                f"node {self.node.name!r}: its Ray actor failed to load: {_cause(exc)}",
                node=self.node.name,
            ) from exc
        self._ready.set()
        self._monitor = threading.Thread(
            target=self._watch, name=f"pipectl-{self.node.name}-{self.index}-monitor", daemon=True
        )
        self._monitor.start()

    def close(self) -> None:
        """Let the node release what it loaded, then end the actor."""
        import ray

        self._closing = True
        self._ready.set()  # wake wait_ready()
        if self._actor is None:
            return
        if not self.dead:
            try:
                ray.get(self._actor.close.remote(), timeout=10)
            except ray.exceptions.RayError:
                pass  # already gone: nothing to release
        ray.kill(self._actor, no_restart=True)
        self._actor = None

    @property
    def ready(self) -> bool:
        """True while the actor is up (False while Ray restarts it, and once it is dead)."""
        return self._ready.is_set() and not self.dead and not self._closing

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the actor is up (True), it is dead for good or closing (False)."""
        self._ready.wait(timeout)
        return self.ready

    def state(self) -> dict:
        """backend, ready, restarts, and where the actor runs (Ray node id, host, pid, device)."""
        return {"backend": "ray", "ready": self.ready, "restarts": self.restarts, **self.info}

    # ---- calls -------------------------------------------------------------------------------
    def run_batch(self, items: list[Item]) -> list[Item | ItemFailure]:
        """One hop: the whole batch to the actor and its outputs back (InstanceDied when the
        actor's process dies meanwhile)."""
        import ray

        generation = self._check_alive()
        try:
            return ray.get(self._actor.run_batch.remote(items))  # type: ignore[union-attr]
        except ray.exceptions.RayActorError as exc:
            raise self._lost(exc, generation) from exc

    async def stream(self, item: Item) -> AsyncIterator[Item]:
        """The node's deltas for one item, from the actor. Leaving early cancels the actor's
        stream, which aborts the work inside it (the LLM frees the request's KV blocks)."""
        import ray

        generation = self._check_alive()
        refs = self._actor.stream.options(num_returns="streaming").remote(item)  # type: ignore[union-attr]
        finished = False
        try:
            async for ref in refs:
                yield await ref
            finished = True
        except ray.exceptions.RayActorError as exc:
            finished = True
            raise self._lost(exc, generation) from exc
        except ray.exceptions.RayTaskError as exc:  # the node raised: re-raise its own error
            finished = True
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None
        finally:
            if not finished:
                ray.cancel(refs)

    def statistics(self, timeout: float = 2.0) -> dict | None:
        """The node's own statistics from inside the actor (None when it has none, or while the
        actor is not ready)."""
        import ray

        if not self.ready:
            return None
        try:
            report = ray.get(self._actor.statistics.remote(), timeout=timeout)  # type: ignore[union-attr]
        except (ray.exceptions.RayError, TimeoutError):
            return None
        return report or None

    # ---- faults ------------------------------------------------------------------------------
    def _check_alive(self) -> int:
        if self.dead or self._closing or self._actor is None:
            raise InstanceDied(self._message("is gone"), node=self.node.name)
        return self._generation

    def _message(self, what: str) -> str:
        where = f"pid {self.info.get('pid', '?')} on Ray node {str(self.info.get('node_id'))[:12]}"
        count = len(self.node.instances)
        restarts = self.node.backend.max_restarts
        return (
            f"node {self.node.name!r}: its Ray actor (instance {self.index + 1} of {count}, "
            f"{where}) {what}; restarts so far {self.restarts}, max_restarts {restarts}"
        )

    def _lost(self, exc: BaseException, generation: int) -> InstanceDied:
        """The actor died under a call: turn not ready (unless the monitor has already seen the
        restart of that incarnation) until the monitor sees it back."""
        with self._lock:
            if generation == self._generation:
                self._ready.clear()
        return InstanceDied(self._message(f"died while computing ({_cause(exc)})"),
                            node=self.node.name)  # fmt: skip

    def _watch(self) -> None:
        """The monitor: hold a `lifeline` call; when it fails, wait for the restart."""
        import ray

        while not self._closing:
            try:
                ray.get(self._actor.lifeline.remote())  # type: ignore[union-attr]
                return  # the actor was closed
            except ray.exceptions.RayError:
                if self._closing:
                    return
            with self._lock:
                self._ready.clear()
            if not self._wait_for_restart():
                return

    def _wait_for_restart(self) -> bool:
        """Poll the actor until Ray has restarted it (True) or it is dead for good (False)."""
        import ray

        while not self._closing:
            try:
                info = ray.get(self._actor.info.remote(), timeout=30)  # type: ignore[union-attr]
            except ray.exceptions.ActorDiedError:
                self.dead = True  # no restarts left
                self._ready.set()  # wake wait_ready(): it answers False now
                return False
            except (ray.exceptions.RayError, TimeoutError):
                time.sleep(_RESTART_POLL_S)  # still restarting
                continue
            with self._lock:
                if (info["pid"], info["node_id"]) != (self.info["pid"], self.info["node_id"]):
                    self.restarts += 1  # a new process: Ray restarted the actor
                    self._generation += 1
                self.info = info
                self._ready.set()
            return True
        return False


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
