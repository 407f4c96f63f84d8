"""An `llm` node whose engine's step thread can be killed on request (`test_dying_llm`), for the
fault tests of streaming instances, and the entry point that serves with it registered:
`python -m tests.server.llm_fault_kind serve FILE...`.

A prompt containing DIE raises KeyboardInterrupt asynchronously in the engine's step loop thread
after the first delta, as a killed worker would: the engine then ends every stream it holds with
InstanceLost, and the streamer restarts the instance (engine/instance_health.py).
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np

from nodes.llm.node import LLMNode
from nodes.registry import register


@register
class DyingLLM(LLMNode):
    kind = "test_dying_llm"

    async def stream(self, item):
        prompt = np.asarray(item.get("prompt", [b""])).reshape(-1)[0]
        first = True
        async for out in super().stream(item):
            yield out
            if first and b"DIE" in bytes(prompt):
                thread = self.engine._thread
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt)
                )
            first = False


if __name__ == "__main__":
    from engine.cli import main

    sys.exit(main())
