"""Placement against a fake inventory of several GPUs: spreading, fitting, and errors with numbers."""

from __future__ import annotations

import pytest

from engine.errors import PlacementError
from engine.placement import GIB, Device, PlacementRequest, inventory, place

CPU = Device("cpu", "cpu", 64 * GIB)
GPUS = [Device(f"cuda:{i}", "cuda", 16 * GIB, i) for i in range(4)]
MACHINE = [CPU, *GPUS]


def devices_of(plans) -> list[str]:
    return [p.device for p in plans]


def test_auto_spreads_round_robin_over_gpus():
    placed = place([PlacementRequest("enc", "auto", instances=6, memory_bytes=GIB)], MACHINE)
    assert devices_of(placed["enc"]) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert all(p.memory_bytes == GIB for p in placed["enc"])


def test_auto_without_gpus_is_cpu():
    placed = place([PlacementRequest("enc", "auto", instances=2, memory_bytes=GIB)], [CPU])
    assert devices_of(placed["enc"]) == ["cpu", "cpu"]


def test_least_used_device_first():
    placed = place(
        [
            PlacementRequest("llm", "cuda:0", memory_bytes=10 * GIB),
            PlacementRequest("enc", "cuda", instances=3, memory_bytes=GIB),
        ],
        MACHINE,
    )
    assert devices_of(placed["llm"]) == ["cuda:0"]
    assert devices_of(placed["enc"]) == ["cuda:1", "cuda:2", "cuda:3"]


def test_larger_requests_are_placed_first_so_they_fit():
    small_gpus = [CPU, Device("cuda:0", "cuda", 10 * GIB, 0), Device("cuda:1", "cuda", 10 * GIB, 1)]
    placed = place(
        [
            PlacementRequest("small", "cuda", instances=2, memory_bytes=3 * GIB),
            PlacementRequest("big", "cuda", instances=2, memory_bytes=7 * GIB),
        ],
        small_gpus,
    )
    assert sorted(devices_of(placed["big"])) == ["cuda:0", "cuda:1"]
    assert sorted(devices_of(placed["small"])) == ["cuda:0", "cuda:1"]
    assert list(placed) == ["small", "big"]  # the request order is kept


def test_devices_list_narrows_the_choice():
    placed = place(
        [PlacementRequest("enc", "cuda", instances=4, devices=("cuda:2", "cuda:3"))], MACHINE
    )
    assert devices_of(placed["enc"]) == ["cuda:2", "cuda:3", "cuda:2", "cuda:3"]
    placed = place([PlacementRequest("x", "auto", devices=("cpu", "cuda:1"), instances=2)], MACHINE)
    assert devices_of(placed["x"]) == ["cpu", "cuda:1"]


def test_cpu_is_cpu_even_with_gpus():
    placed = place([PlacementRequest("t", "cpu", instances=2, memory_bytes=GIB)], MACHINE)
    assert devices_of(placed["t"]) == ["cpu", "cpu"]


def test_does_not_fit_gives_the_numbers():
    with pytest.raises(PlacementError) as info:
        place(
            [
                PlacementRequest("a", "cuda", instances=2, memory_bytes=12 * GIB),
                PlacementRequest("b", "cuda:1", instances=1, memory_bytes=8 * GIB, where="p:9: "),
            ],
            [CPU, *GPUS[:2]],
        )
    message = str(info.value)
    assert message.startswith("p:9: node 'b': instance 1 of 1 needs 8.00 GiB")
    assert "cuda:1 4.00 GiB free of 16.00 GiB" in message


def test_missing_device_lists_what_exists():
    with pytest.raises(PlacementError, match=r"cuda:7, which does not exist; devices: cpu, cuda"):
        place([PlacementRequest("a", "cuda:7")], MACHINE)
    with pytest.raises(PlacementError, match="asks for a CUDA device; devices: cpu"):
        place([PlacementRequest("a", "cuda")], [CPU])


def test_real_inventory_has_the_cpu_first():
    devices = inventory()
    assert devices[0].name == "cpu" and devices[0].kind == "cpu"
    assert devices[0].memory_bytes > 0
    assert all(d.kind == "cuda" for d in devices[1:])
