"""The root of pipectl's error tree, and the one exception a node raises when the *request* is
wrong, not the node.

`PipelineError` is defined here, at the bottom of the house, so that `nodes/` can raise errors of
the tree (`nodes.registry.UnknownKind`) without importing `engine/`; `engine/errors.py` re-exports
it and documents the whole tree.

Nodes know nothing of the engine (they must not import engine/), so the engine's error tree cannot
be raised from here. A node that finds a bad value in a request (an LLM `max_tokens` of 0, a
`messages` input that is not chat JSON, a prompt longer than `max_model_len`) raises
`InvalidRequest` naming the field; the engine maps it to `engine.errors.InvalidInput`
(HTTP 400 / gRPC INVALID_ARGUMENT), names the node, and does not count it as a node failure.
Anything else a node raises is the node's fault (HTTP 500 / gRPC INTERNAL). A node whose
worker died (the LLM engine's step thread) raises `InstanceLost`: the engine then fails what that
instance held, naming the node, and restarts the instance (engine/instance_health.py).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every pipectl error (the tree: engine/errors.py)."""


class InvalidRequest(ValueError):
    """A request value this node cannot accept. `field` names the input or parameter at fault
    (e.g. "max_tokens"); the message says what is wrong and what is allowed.

    It subclasses ValueError so that code using a node directly (offline, without the engine)
    keeps catching what it caught before."""

    def __init__(self, message: str, *, field: str = ""):
        self.field = field
        super().__init__(message)


class InvalidConfig(ValueError):
    """A node cannot load because of what its pipeline file says (a `function` that does not
    exist, a `max_model_len` above the model's limit): the file's author's mistake, not the
    server's. `field` names the param at fault (e.g. "function"). The engine answers a load
    that fails with it as 400 / INVALID_ARGUMENT naming the file, the node and the field;
    any other load failure is the server's (500 / INTERNAL).

    It subclasses ValueError so that code catching ValueError keeps catching it."""

    def __init__(self, message: str, *, field: str = ""):
        self.field = field
        super().__init__(message)


class InstanceLost(RuntimeError):
    """This instance of the node can serve no more: a worker it depends on died (e.g. the LLM
    engine's step thread). Not contained as one item's failure: the runner fails every request
    the instance holds and reloads it, as when its own thread is lost."""
