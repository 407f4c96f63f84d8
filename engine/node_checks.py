"""Checks of each node's own settings, beside the graph checks of engine/graph.py: its batching
(against what its kind supports), its placement, its dtype on this CPU and its `when:` condition.
The issue codes are listed in engine/graph.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.condition import ConditionError, parse_condition
from engine.defaults import batching_fields, placement_field
from engine.errors import suggest
from engine.plan import BatchPolicy
from nodes.compute_dtype import bf16_slowdown

if TYPE_CHECKING:
    from engine.analysis import NodeInfo
    from engine.spec import PipelineSpec


class NodeSettingChecks:
    """Mixed into the graph checker, which provides `spec` and `add`."""

    spec: PipelineSpec

    if TYPE_CHECKING:

        def add(
            self, code: str, path: str, message: str, hint: str = "", severity: str = ""
        ) -> None: ...

    def check_batching(self, info: NodeInfo) -> None:
        if info.kind is None:
            return
        merged = batching_fields(self.spec, info.spec)
        own = info.spec.batching
        where = f"nodes.{info.name}.batching" if own is not None else "defaults.batching"

        def own_sets(name: str) -> bool:
            return own is not None and getattr(own, name) is not None

        def path(name: str) -> str:
            if own_sets(name):
                return f"nodes.{info.name}.batching.{name}"
            return (
                f"defaults.batching.{name}"
                if self.spec.lines.has(f"defaults.batching.{name}")
                else where
            )

        limit = info.kind.max_batch_size
        mbs = merged.get("max_batch_size", BatchPolicy.max_batch_size)
        if mbs > limit:
            if own_sets("max_batch_size"):
                self.add(
                    "E-BATCH-TOO-LARGE",
                    path("max_batch_size"),
                    f"node {info.name!r}: max_batch_size {mbs} is above the {limit} that kind "
                    f"{info.spec.kind!r} supports",
                    f"set max_batch_size <= {limit}",
                )
            mbs = limit  # an inherited default larger than the kind allows is clamped
        merged["max_batch_size"] = mbs
        preferred = merged.get("preferred_batch_sizes", ())
        if not own_sets("preferred_batch_sizes") and not own_sets("max_batch_size"):
            # both inherited: keep the defaults usable by kinds with a smaller limit
            preferred = merged["preferred_batch_sizes"] = tuple(p for p in preferred if p <= mbs)
        for size in preferred:
            if size > mbs:
                self.add(
                    "E-BATCH-PREFERRED",
                    path("preferred_batch_sizes"),
                    f"node {info.name!r}: preferred batch size {size} is above max_batch_size "
                    f"{mbs}",
                )
        policy = BatchPolicy(**merged)
        if policy.default_priority > policy.priority_levels:
            self.add(
                "E-BATCH-PRIORITY",
                path("default_priority"),
                f"node {info.name!r}: default_priority {policy.default_priority} is above "
                f"priority_levels {policy.priority_levels}",
                "priorities are 1..priority_levels",
            )
        info.batching = policy

    def check_placement(self, info: NodeInfo) -> None:
        device = placement_field(self.spec, info.spec, "device", "auto")
        for d in placement_field(self.spec, info.spec, "devices", []):
            if device == "auto" or d == device or (device == "cuda" and d.startswith("cuda")):
                continue
            self.add(
                "E-PLACEMENT-CONFLICT",
                f"nodes.{info.name}.placement.devices",
                f"node {info.name!r}: devices lists {d!r} but device is {device!r}",
                "drop `device` or list only devices it allows",
            )

    def check_dtype(self, info: NodeInfo) -> None:
        """An explicit bf16 where this CPU runs it slower than fp32 (read without torch)."""
        if getattr(info.params, "dtype", None) != "bf16":
            return
        device = placement_field(self.spec, info.spec, "device", "auto")
        warning = bf16_slowdown("bf16", device)
        if warning:
            path = f"nodes.{info.name}.params.dtype"
            self.add("W-DTYPE-BF16-SLOW", path, f"node {info.name!r}: {warning}", "", "warning")

    def check_condition(self, info: NodeInfo) -> None:
        if info.spec.when is None:
            return
        path = f"nodes.{info.name}.when"
        try:
            cond = parse_condition(info.spec.when)
        except ConditionError as exc:
            self.add("E-COND-SYNTAX", path, f"node {info.name!r}: when: {exc}")
            return
        info.condition = cond
        if info.ports is None:
            return
        types = {**info.ports.inputs, **info.provided}
        for name in sorted(cond.names):
            if name not in info.ports.inputs:
                hint = suggest(name, info.ports.inputs, f"inputs of {info.name}")
                self.add(
                    "E-COND-NAME",
                    path,
                    f"node {info.name!r}: when: {name!r} is not an input port of the node",
                    hint,
                )
        for err in cond.type_errors(types):
            self.add("E-COND-TYPE", path, f"node {info.name!r}: when: {err}")
        for note in cond.constant_lengths(types):
            self.add("W-COND-CONSTANT", path, f"node {info.name!r}: when: {note}", "", "warning")
