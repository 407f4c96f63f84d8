"""Prometheus `/metrics`: read from the executors' statistics at scrape time, so the request path
pays nothing for them.

Per node (labels pipeline, node): successes, failures, queue and compute seconds, batches, the
batch-size histogram, items queued now. Per model (label model): requests and their seconds.
`pipectl_node_shared_by`: how many nodes (of any pipeline) share the node's instances, and
`pipectl_instance_loads_total{kind}`: instances of batched kinds loaded in the process (a node
that pipelines share loads once). A streaming node that reports its own statistics (the LLM engine: running and waiting sequences,
KV blocks in use, prefix-cache hit rate, tokens/s) has each number as a gauge
`pipectl_<kind>_<name>`, e.g. `pipectl_llm_running`.
"""

from __future__ import annotations

from aiohttp import web

from engine.server.describe import model_cache, node_statistics
from engine.server.repository import Repository

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class PipelineCollector:
    """A prometheus_client collector over a Repository."""

    def __init__(self, repo: Repository):
        self.repo = repo

    def collect(self):
        nodes, requests, cache = _node_families(), _request_families(), _cache_families()
        gauges: dict = {}  # a node's own statistics, by metric name
        for model in self.repo.models.values():
            _add_model(model, requests, cache)
            if model.node is None:
                continue
            kind = model.plan.nodes[model.node].kind
            stats = node_statistics(self.repo, model)
            _add_node(nodes, gauges, [model.pipeline, model.node], stats, kind)
        counters = {
            k: nodes.pop(k) for k in ("success", "failure", "queue_ns", "compute_ns", "batches")
        }
        yield from counters.values()
        yield from cache.values()
        yield from nodes.values()  # batch sizes, queued, instances up, restarts
        yield from requests.values()
        yield from gauges.values()
        yield _instance_loads()


def _node_families() -> dict:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    labels = ["pipeline", "node"]
    return {
        "success": CounterMetricFamily("pipectl_node_success", "items a node computed", labels=labels),
        "failure": CounterMetricFamily("pipectl_node_failure", "items a node failed, expired or rejected", labels=labels),
        "queue_ns": CounterMetricFamily("pipectl_node_queue_seconds", "time items waited in the node's queue", labels=labels),
        "compute_ns": CounterMetricFamily("pipectl_node_compute_seconds", "time the node spent computing batches", labels=labels),
        "batches": CounterMetricFamily("pipectl_node_batches", "batches the node computed", labels=labels),
        "hist": HistogramMetricFamily("pipectl_node_batch_size", "items per batch", labels=labels),
        "queued": GaugeMetricFamily("pipectl_node_queued", "items waiting now", labels=labels),
        "up": GaugeMetricFamily(
            "pipectl_node_instances_up", "instances serving now (below the placed count while "
            "a lost instance reloads)", labels=labels,
        ),
        "shared_by": GaugeMetricFamily(
            "pipectl_node_shared_by", "nodes, in any pipeline, that share this node's "
            "instances and queue (1: its own)", labels=labels,
        ),
        "restarts": CounterMetricFamily(
            "pipectl_node_instance_restarts",
            "instances lost and restarted (a thread, or a Ray actor whose process died)",
            labels=labels,
        ),
    }  # fmt: skip


def _request_families() -> dict:
    from prometheus_client.core import CounterMetricFamily

    return {
        "ok": CounterMetricFamily("pipectl_requests_success", "requests answered", labels=["model"]),
        "fail": CounterMetricFamily("pipectl_requests_failure", "requests failed", labels=["model"]),
        "seconds": CounterMetricFamily("pipectl_request_seconds", "time spent answering requests", labels=["model"]),
    }  # fmt: skip


def _cache_families() -> dict:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    return {
        "hits": CounterMetricFamily("pipectl_cache_hits", "responses served from the response cache", labels=["model"]),
        "misses": CounterMetricFamily("pipectl_cache_misses", "cacheable requests computed and stored", labels=["model"]),
        "entries": GaugeMetricFamily("pipectl_cache_entries", "responses held in the cache", labels=["model"]),
        "bytes": GaugeMetricFamily("pipectl_cache_bytes", "bytes held in the cache", labels=["model"]),
    }  # fmt: skip


def _add_model(model, requests: dict, cache: dict) -> None:
    """A model's request counters and its response cache (a node model's: its node's)."""
    rc = model_cache(model)
    if rc is not None:
        for name, value in (("hits", rc.hits), ("misses", rc.misses),
                            ("entries", len(rc)), ("bytes", rc.bytes)):  # fmt: skip
            cache[name].add_metric([model.name], value)
    st = model.stats
    requests["ok"].add_metric([model.name], st.success_count)
    requests["fail"].add_metric([model.name], st.fail_count)
    requests["seconds"].add_metric([model.name], (st.success_ns + st.fail_ns) / 1e9)


def _add_node(families: dict, gauges: dict, key: list[str], s: dict, kind: str) -> None:
    """One node's counters, batch-size histogram, gauges, and its own statistics."""
    from prometheus_client.core import GaugeMetricFamily

    for name in ("success", "failure", "queue_ns", "compute_ns", "batches"):
        families[name].add_metric(key, s[name] / 1e9 if name.endswith("_ns") else s[name])
    sizes = s["batch_sizes"]
    buckets, running = [], 0
    for bound in BATCH_BUCKETS:
        running += sum(n for size, n in sizes.items() if _bucket(size) == bound)
        buckets.append((str(bound), running))
    buckets.append(("+Inf", sum(sizes.values())))
    families["hist"].add_metric(key, buckets, sum(size * n for size, n in sizes.items()))
    families["queued"].add_metric(key, s["queued"])
    families["up"].add_metric(key, s["instances_up"])
    families["restarts"].add_metric(key, s["restarts"])
    families["shared_by"].add_metric(key, s["shared_by"])
    for name, value in (s["own"] or {}).items():
        if not isinstance(value, int | float):
            continue
        metric = _metric_name(f"pipectl_{kind}_{name}")
        if metric not in gauges:
            gauges[metric] = GaugeMetricFamily(
                metric, f"{kind} node: {name}", labels=["pipeline", "node"]
            )
        gauges[metric].add_metric(key, float(value))


def _instance_loads():
    from prometheus_client.core import CounterMetricFamily

    from engine.instance import instance_loads

    family = CounterMetricFamily(
        "pipectl_instance_loads", "instances of batched kinds loaded in this process (a node "
        "that pipelines share loads once)", labels=["kind"],
    )  # fmt: skip
    for kind, count in sorted(instance_loads().items()):
        family.add_metric([kind], count)
    return family


def _metric_name(text: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in text)


def _bucket(size: int) -> int:
    for bound in BATCH_BUCKETS:
        if size <= bound:
            return bound
    return 1 << 62


def routes(repo: Repository) -> list[web.RouteDef]:
    """`GET /metrics` in the Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(PipelineCollector(repo))

    async def metrics(request):
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return [web.get("/metrics", metrics)]
