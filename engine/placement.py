"""Placement: which device each node instance runs on, within each device's memory.

`inventory()` lists the CPU (system memory) and every CUDA device torch sees (torch is imported
only here, lazily). `place()` spreads each node's instances over its allowed devices, picking the
least used device that still fits, and fails with the numbers when one does not fit. Nodes with
`backend: ray` are not placed here: `ray_backend()` turns their fields into Ray resources, and
Ray's scheduler picks the machine (checked against the cluster in engine/backends/ray_cluster.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from engine.errors import PlacementError
from engine.plan import Backend, InstancePlan

GIB = 1 << 30


@dataclass(frozen=True)
class Device:
    """One device: `name` is 'cpu' or 'cuda:N'; `kind` 'cpu' or 'cuda'; total memory in bytes."""

    name: str
    kind: str
    memory_bytes: int
    index: int = 0


@dataclass(frozen=True)
class PlacementRequest:
    """What one node asks for: `device` (auto, cpu, cuda, cuda:N), optionally narrowed to
    `devices`; `instances` copies of `memory_bytes` each. `where` prefixes error messages."""

    node: str
    device: str = "auto"
    instances: int = 1
    devices: tuple[str, ...] = ()
    memory_bytes: int = 0
    where: str = ""


def inventory() -> list[Device]:
    """The CPU, then each CUDA device with its total memory (when torch sees CUDA)."""
    devices = [Device("cpu", "cpu", _system_memory(), 0)]
    try:
        import torch
    except ImportError:
        return devices
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            total = torch.cuda.get_device_properties(i).total_memory
            devices.append(Device(f"cuda:{i}", "cuda", int(total), i))
    return devices


def _system_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0  # unknown: placement then does not bound the CPU


def allowed_devices(request: PlacementRequest, devices: list[Device]) -> list[Device]:
    """The devices a request may use, in inventory order; PlacementError when none exist."""
    by_name = {d.name: d for d in devices}
    gpus = [d for d in devices if d.kind == "cuda"]
    known = ", ".join(by_name)

    def expand(name: str) -> list[Device]:
        if name == "auto":
            return gpus or [by_name["cpu"]]
        if name == "cuda":
            if not gpus:
                raise PlacementError(
                    f"node {request.node!r} asks for a CUDA device; devices: {known}",
                    field="device", where=request.where,
                )  # fmt: skip
            return gpus
        if name not in by_name:
            raise PlacementError(
                f"node {request.node!r} asks for {name}, which does not exist; devices: {known}",
                field="device", where=request.where,
            )  # fmt: skip
        return [by_name[name]]

    chosen = expand(request.device)
    if request.devices:
        listed = [d for name in request.devices for d in expand(name)]
        chosen = [d for d in chosen if d in listed] if request.device != "auto" else listed
    return sorted(set(chosen), key=devices.index)


def place(
    requests: Iterable[PlacementRequest], devices: list[Device]
) -> dict[str, tuple[InstancePlan, ...]]:
    """Assign every instance a device. Larger requests are placed first so that they find room;
    each instance goes to the allowed device with the least memory used so far that fits it,
    ties broken round-robin. Raises PlacementError with needed and free bytes per device."""
    if not any(d.name == "cpu" for d in devices):
        raise PlacementError("the device inventory has no 'cpu' entry")
    requests = list(requests)
    used = {d.name: 0 for d in devices}
    last_pick = {d.name: -1 for d in devices}
    plans: dict[str, list[InstancePlan]] = {r.node: [] for r in requests}
    clock = 0
    for request in sorted(requests, key=lambda r: -r.memory_bytes):
        allowed = allowed_devices(request, devices)
        for n in range(request.instances):
            fits = [d for d in allowed if _free(d, used) >= request.memory_bytes]
            if not fits:
                raise PlacementError(
                    _no_room(request, n, allowed, used), field="memory", where=request.where
                )
            best = min(fits, key=lambda d: (used[d.name], last_pick[d.name], devices.index(d)))
            used[best.name] += request.memory_bytes
            last_pick[best.name] = clock
            clock += 1
            plans[request.node].append(InstancePlan(best.name, request.memory_bytes))
    return {node: tuple(p) for node, p in plans.items()}


def _free(device: Device, used: dict[str, int]) -> int:
    if device.memory_bytes <= 0:  # unknown size: unbounded
        return 1 << 62
    return device.memory_bytes - used[device.name]


def _no_room(request: PlacementRequest, n: int, allowed: list[Device], used) -> str:
    free = ", ".join(
        f"{d.name} {_gib(_free(d, used))} free of {_gib(d.memory_bytes)}" for d in allowed
    )
    return (
        f"node {request.node!r}: instance {n + 1} of {request.instances} needs "
        f"{_gib(request.memory_bytes)} and no allowed device has room ({free})"
    )


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


DEFAULT_MAX_RESTARTS = 3  # Ray restarts a dead actor this many times unless the node says otherwise


def ray_backend(
    request: PlacementRequest, resources, max_restarts: int | None
) -> tuple[Backend, str]:
    """The Backend of a node placed on Ray, and the device its instances use inside their actor
    ('cpu', or 'cuda:0': the GPU Ray assigns). `resources` is the spec's ResourcesSpec or None;
    an actor reserves 1 CPU unless told otherwise. PlacementError names the conflicting field."""
    where = f"{request.where}node {request.node!r}: backend ray: "
    if request.devices:
        raise PlacementError(where + "`devices` lists local devices; Ray picks the machine "
                             "(use resources.custom to steer it)")  # fmt: skip
    num_cpus = resources.num_cpus if resources and resources.num_cpus is not None else 1.0
    num_gpus = resources.num_gpus if resources and resources.num_gpus is not None else None
    device = request.device
    if device.startswith("cuda:"):
        raise PlacementError(where + f"device {device} names a local GPU; Ray assigns GPUs: "
                             "write device: cuda and resources.num_gpus")  # fmt: skip
    if device == "cuda" and num_gpus is None:
        num_gpus = 1.0
    if device == "cpu" and num_gpus:
        raise PlacementError(where + f"device cpu but resources.num_gpus is {num_gpus:g}")
    if device == "cuda" and not num_gpus:
        raise PlacementError(where + "device cuda but resources.num_gpus is 0")
    pairs: list[tuple[str, float]] = [("CPU", float(num_cpus))]
    if num_gpus:
        pairs.append(("GPU", float(num_gpus)))
    if resources and resources.memory is not None:
        pairs.append(("memory", float(resources.memory)))
    if resources:
        pairs.extend((name, float(v)) for name, v in sorted(resources.custom.items()))
    restarts = DEFAULT_MAX_RESTARTS if max_restarts is None else max_restarts
    backend = Backend("ray", tuple(p for p in pairs if p[1] > 0), restarts)
    return backend, ("cuda:0" if num_gpus else "cpu")  # Ray sets CUDA_VISIBLE_DEVICES
