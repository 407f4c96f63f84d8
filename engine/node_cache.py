"""Triton's response cache on one node: `response_cache: {max_entries, max_bytes}` under a node.

The same cache as a pipeline's (engine/response_cache.py: an LRU map bounded by entries and
bytes, keyed by a SHA-256), one level down: the key is the node's input item (every port's name,
dtype, shape and bytes, per-request settings such as an LLM's temperature and seed included) and
its output ports; the node's params are fixed for the loaded version that holds the cache, so
they need no place in the key. An item is cached only where the kind declares its answer
deterministic for it (`Node.is_deterministic`, judged with the item's own values); others pass
through uncounted. A hit skips the node's queue and instances: its outputs (copies of the stored
ones, byte for byte) go on through the request's dataflow as the node's would.
"""

from __future__ import annotations

import numpy as np

from engine.plan import NodePlan
from engine.response_cache import ResponseCache, request_key


class NodeCache:
    """The response cache of one node of one loaded pipeline version; thread-safe."""

    def __init__(self, node: NodePlan) -> None:
        from nodes.registry import get_kind

        assert node.response_cache is not None
        self.node = node.name
        self.cache = ResponseCache(*node.response_cache)
        self._kind = get_kind(node.kind)
        self._params = node.params
        self._outputs = sorted(node.ports.outputs)

    def key(self, item: dict[str, np.ndarray]) -> bytes | None:
        """The item's key, or None when the kind is not deterministic for it."""
        values = {port: np.asarray(value).reshape(-1) for port, value in item.items()}
        if not self._kind.is_deterministic(self._params, values):
            return None
        return request_key(self.node, "", item, self._outputs)


def node_caches(nodes: dict[str, NodePlan]) -> dict[str, NodeCache]:
    """A fresh NodeCache for every node that asks for one."""
    return {name: NodeCache(node) for name, node in nodes.items() if node.response_cache}
