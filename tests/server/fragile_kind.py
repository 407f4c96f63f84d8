"""A batched node kind that misbehaves on request (`test_fragile`), for the fault tests of issue
8, and the entry point that serves with it registered: `python -m tests.server.fragile_kind
serve FILE...`.

x = -1 calls sys.exit; x = -2 raises KeyboardInterrupt (the one exception a node's containment
lets through, so the instance's thread is lost, as if killed); x >= 1000 sleeps x ms; any other x
is echoed. Every load after the first sleeps `reload_s`, so that the time an instance is down
while it restarts can be seen from outside.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from nodes.base import Node, NodeParams, Ports, TensorSpec
from nodes.registry import register


class FragileParams(NodeParams):
    reload_s: float = 5.0


@register
class Fragile(Node):
    kind = "test_fragile"
    Params = FragileParams
    loads = 0  # loads in this process, over every instance

    @classmethod
    def ports(cls, params):
        spec = TensorSpec("FP32", (1,))
        return Ports(inputs={"x": spec}, outputs={"y": spec})

    def load(self, device: str) -> None:
        super().load(device)
        if Fragile.loads:
            time.sleep(self.params.reload_s)
        Fragile.loads += 1

    def run_batch(self, items):
        xs = [float(item["x"][0]) for item in items]
        if -1.0 in xs:
            sys.exit("asked to exit")
        if -2.0 in xs:
            raise KeyboardInterrupt("asked to die")
        for x in xs:
            if x >= 1000:
                time.sleep(x / 1000)
        return [{"y": np.array([x], dtype=np.float32)} for x in xs]


if __name__ == "__main__":
    from engine.cli import main

    sys.exit(main())
