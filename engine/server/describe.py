"""What the server says about itself and its models, as KServe v2 JSON-form dicts.

HTTP returns these dicts as they are; gRPC parses them into the matching protobuf messages (the
field names are the proto's). A pipeline is reported as a Triton ensemble whose steps are its
nodes (`<pipeline>.<node>` models), so that tools can break latency down per node.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from engine.plan import Plan
from engine.server.repository import READY, UNAVAILABLE, Repository, ServedModel

SERVER_NAME = "pipectl"
EXTENSIONS = (
    "model_configuration",
    "statistics",
    "binary_tensor_data",
    "parameters",
    "schedule_policy",
    "generate",
)


def server_version() -> str:
    try:
        return version("pipectl")
    except PackageNotFoundError:
        return "0"


def server_metadata() -> dict:
    return {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}


def _config_dtype(dtype: str) -> str:
    return "TYPE_STRING" if dtype == "BYTES" else f"TYPE_{dtype}"


def platform(model: ServedModel) -> str:
    if model.node is None:
        return "ensemble"
    return f"pipectl_{model.plan.nodes[model.node].kind}"


def model_metadata(model: ServedModel, versions: list[str] | None = None) -> dict:
    """ModelMetadata: tensors carry the batch dimension as -1 (max_batch_size > 0); `versions`
    lists the loaded versions of the model (default: its own)."""

    def tensors(specs):
        return [{"name": n, "datatype": s.dtype, "shape": [-1, *s.shape]} for n, s in specs.items()]

    return {
        "name": model.name,
        "versions": versions or [model.version],
        "platform": platform(model),
        "inputs": tensors(model.inputs),
        "outputs": tensors(model.outputs),
    }


def max_batch_size(plan: Plan) -> int:
    return max(1, min(n.batching.max_batch_size for n in plan.nodes.values()))


def _tensor_names(plan: Plan) -> dict[tuple[str, str], str]:
    """Ensemble tensor name of every node output: the pipeline output's name if it is one."""
    names = {
        (node, port): f"{node}.{port}" for node, n in plan.nodes.items() for port in n.ports.outputs
    }
    for out, src in plan.outputs.items():
        names[(src.node, src.port)] = out
    return names


def model_config(model: ServedModel) -> dict:
    """ModelConfig of a pipeline (ensemble) or of one node (dynamic batcher + instances)."""
    plan = model.plan
    config: dict = {
        "name": model.name,
        "platform": platform(model),
        "max_batch_size": max_batch_size(plan),
        "input": [
            {
                "name": n,
                "data_type": _config_dtype(s.dtype),
                "dims": list(s.shape),
                "optional": s.optional,
            }
            for n, s in model.inputs.items()
        ],
        "output": [
            {"name": n, "data_type": _config_dtype(s.dtype), "dims": list(s.shape)}
            for n, s in model.outputs.items()
        ],
        "model_transaction_policy": {"decoupled": model.decoupled},
    }
    if model.node is None:
        config["ensemble_scheduling"] = {"step": _ensemble_steps(plan)}
    else:
        config.update(_node_config(plan.nodes[model.node]))
    return config


def _ensemble_steps(plan) -> list[dict]:
    """Triton's ensemble_scheduling steps: each node as model `<pipeline>.<node>`."""
    names = _tensor_names(plan)
    return [
        {
            "model_name": f"{plan.name}.{node}",
            "model_version": -1,
            "input_map": {
                port: src.port if src.is_pipeline_input else names[(src.node, src.port)]
                for port, src in n.inputs.items()
            },
            "output_map": {port: names[(node, port)] for port in n.ports.outputs},
        }
        for node, n in plan.nodes.items()
    ]


def _node_config(n) -> dict:
    """A node model's backend, dynamic_batching and instance_group, in Triton's fields."""
    policy = n.batching
    groups: dict[str, int] = {}
    for instance in n.instances:
        groups[instance.device] = groups.get(instance.device, 0) + 1
    return {
        "backend": "pipectl",
        "parameters": {"kind": {"string_value": n.kind}},
        "dynamic_batching": {
            "preferred_batch_size": list(policy.preferred_batch_sizes),
            "max_queue_delay_microseconds": int(policy.max_queue_delay_ms * 1000),
            "priority_levels": policy.priority_levels,
            "default_priority_level": policy.default_priority,
            "default_queue_policy": {
                "max_queue_size": policy.max_queue_size,
                "default_timeout_microseconds": int(policy.timeout_ms * 1000),
                "allow_timeout_override": True,
            },
        },
        "instance_group": [
            {"name": f"{n.name}_{device}", "count": count, **_device_kind(device)}
            for device, count in groups.items()
        ],
    }


def _device_kind(device: str) -> dict:
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        return {"kind": "KIND_GPU", "gpus": [index]}
    return {"kind": "KIND_CPU"}


def _duration(count: int, ns: int) -> dict:
    return {"count": int(count), "ns": int(ns)}


def node_statistics(repo: Repository, model: ServedModel) -> dict:
    """The counters of the node behind `model`, from its pipeline's executor (node models run
    on the same instances, so these count both)."""
    total: dict = {"success": 0, "failure": 0, "queue_ns": 0, "compute_ns": 0, "batches": 0}
    executor = model.family.executor if model.family is not None else None
    stats = executor.statistics().get(model.node) if executor is not None else None
    sizes: dict[int, int] = {}
    if stats:
        for key in total:
            total[key] += int(stats.get(key, 0))
        total["failure"] += int(stats.get("expired", 0)) + int(stats.get("rejected", 0))
        if stats.get("streaming"):
            total["batches"] = total["success"] + total["failure"]
        for size, count in stats.get("batch_sizes", {}).items():
            sizes[int(size)] = count
    total["batch_sizes"] = sizes
    total["queued"] = int(stats.get("queued", 0)) if stats else 0
    placed = len(model.plan.nodes[model.node].instances)
    total["instances_up"] = int(stats.get("instances_up", placed)) if stats else 0
    total["restarts"] = int(stats.get("restarts", 0)) if stats else 0
    total["placement"] = list(stats.get("placement", [])) if stats else []
    total["shared_by"] = int(stats.get("shared_by", 1)) if stats else 1
    # a streaming node's own numbers (e.g. the LLM engine's gauges), under its kind name
    own = stats.get(model.plan.nodes[model.node].kind) if stats else None
    total["own"] = own if isinstance(own, dict) else {}
    return total


def model_cache(model: ServedModel):
    """The response cache behind `model` (engine/response_cache.py): a pipeline's own, or, for
    a node model, the node's (engine/node_cache.py, held by its pipeline's executor); or None."""
    if model.node is None:
        return model.cache
    executor = getattr(model.family, "executor", None)
    node_cache = executor.caches.get(model.node) if executor is not None else None
    return node_cache.cache if node_cache is not None else None


def _cache_stats(cache) -> dict:
    """Triton's InferStatistics cache_hit / cache_miss, when there is a cache."""
    if cache is None:
        return {}
    return {
        "cache_hit": _duration(cache.hits, cache.hit_ns),
        "cache_miss": _duration(cache.misses, cache.miss_ns),
    }


def model_statistics(repo: Repository, model: ServedModel) -> dict:
    """Triton ModelStatistics: request counters; a pipeline's queue and compute are its own
    requests' times summed over their nodes (an ensemble's in Triton), a node model's are the
    node's over every request it served (shared nodes: every sharer's); cache hits and misses
    of the model's response cache (a node model's: its node's)."""
    if model.node is not None:
        s = node_statistics(repo, model)
        return {
            "name": model.name,
            "version": model.version,
            "last_inference": model.stats.last_inference_ms,
            "inference_count": s["success"],
            "execution_count": s["batches"],
            "inference_stats": {
                "success": _duration(s["success"], s["queue_ns"] + s["compute_ns"]),
                "fail": _duration(s["failure"], 0),
                "queue": _duration(s["success"], s["queue_ns"]),
                "compute_infer": _duration(s["success"], s["compute_ns"]),
                **_cache_stats(model_cache(model)),
            },
            "batch_stats": [
                {"batch_size": size, "compute_infer": _duration(count, 0)}
                for size, count in sorted(s["batch_sizes"].items())
            ],
        }
    st = model.stats  # its own requests only: a node shared with other pipelines counts theirs
    queue_ns, compute_ns = st.queue_ns, st.compute_ns
    return {
        "name": model.name,
        "version": model.version,
        "last_inference": st.last_inference_ms,
        "inference_count": st.inference_count,
        "execution_count": st.execution_count,
        "inference_stats": {
            "success": _duration(st.success_count, st.success_ns),
            "fail": _duration(st.fail_count, st.fail_ns),
            "queue": _duration(st.success_count, queue_ns),
            "compute_infer": _duration(st.success_count, compute_ns),
            **_cache_stats(model.cache),
        },
    }


def statistics(repo: Repository, name: str = "", version: str = "") -> dict:
    """Triton's ModelStatistics: of `name` at `version`; without a version, of every loaded
    version of it; without a name, of every loaded version of every model (KServe's
    ModelStatisticsRequest)."""
    if name and version:
        models = [repo.get(name, version)]
    elif name:
        versions = repo.served_versions(name)
        models = [repo.get(name, v) for v in versions] if versions else [repo.get(name)]
    else:
        models = [
            model
            for versions in repo.versions.values()
            for pv in sorted(versions.values(), key=lambda v: int(v.version))
            for model in pv.models.values()
        ]
    return {"model_stats": [model_statistics(repo, m) for m in models]}


def repository_index(repo: Repository, ready_only: bool = False) -> list[dict]:
    """Triton's RepositoryIndex: every version of every model, loaded or not (a failed load is
    UNAVAILABLE with its reason; an unloaded one UNAVAILABLE "unloaded"). A version whose reload
    failed while its previous load serves on is UNAVAILABLE with the reason, as the latest load
    of it failed; `ready_only` (Triton's `ready` filter: what takes requests) lists it READY."""
    out = []
    seen = set()
    for versions in repo.versions.values():
        for pv in sorted(versions.values(), key=lambda v: int(v.version)):
            for model in pv.models.values():
                seen.add((model.name, pv.version))
                if ready_only and model.state != READY:
                    continue
                state = model.state
                if state == READY and pv.reload_failure and not ready_only:
                    state = UNAVAILABLE
                entry = {"name": model.name, "version": pv.version, "state": state}
                if model.reason:
                    entry["reason"] = model.reason
                out.append(entry)
    if not ready_only:
        for (name, version), reason in sorted(repo.unavailable.items()):
            if (name, version) not in seen:
                out.append(
                    {"name": name, "version": version, "state": "UNAVAILABLE", "reason": reason}
                )
    return out
