"""`GET /v2/stats/live`: one JSON document with everything the live page draws, for scripts too.

    {"server": {"name", "version", "uptime_s", "window_s"},
     "pipelines": [{"name", "file", "state", "reason",
                    "requests": {"success", "failure", "in_flight"},
                    "inputs": [...], "outputs": {"answer": "generate.text", ...},
                    "edges": [{"from": "$inputs" | node, "to": node, "port": "text"}, ...],
                    "nodes": [NODE, ...], "recent": [REQUEST, ...]}]}

NODE: name, kind, streaming, when (the condition, or null), instances ([{"index", "device",
"backend", "ready", "restarts", and for a Ray actor "node_id", "host", "pid"}]), queued (items waiting now), success, failure (failed + expired + rejected), batches,
batch_sizes ({size: batches}), rps (items/s over the last 10 s), and over the last `window_s`
seconds (at most the node's last 1,024 batches and 2,048 items): queue_ms (per item) and
compute_ms (per batch) as {"p50", "p90", "p99"} or null, mean_batch, count; a node with
gauges of its own (the LLM engine) adds them under `own`, plus `tokens_per_s`.
REQUEST (a few sampled recent requests, for the timeline): model, request_id, total_ms, ok,
error, age_s, nodes ([{"node", "item", "start_ms", "queue_ms", "compute_ms", "batch_size",
"instance", "skipped", "attributes"}]).
Everything is read at request time from counters the executor keeps anyway.
"""

from __future__ import annotations

import time

from engine.server.describe import SERVER_NAME, node_statistics, server_version
from engine.server.repository import Repository, ServedModel
from engine.server.traces import RecentTraces

WINDOW_S = 60.0
RATE_S = 10.0  # requests/s over the last 10 s


class LiveStats:
    """Builds the live document; remembers the last token count of each LLM node for tokens/s."""

    def __init__(self, repo: Repository, traces: RecentTraces):
        self.repo = repo
        self.traces = traces
        self.started = time.monotonic()
        self._tokens: dict[tuple[str, str], tuple[float, float, float]] = {}  # t, tokens, rate

    def document(self, window_s: float = WINDOW_S) -> dict:
        pipelines = [self._pipeline(self.repo.models[p], window_s) for p in self.repo.pipelines]
        server = {
            "name": SERVER_NAME,
            "version": server_version(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "window_s": window_s,
            "in_flight": self.repo.inflight,
        }
        return {"server": server, "pipelines": pipelines}

    def _pipeline(self, model: ServedModel, window_s: float) -> dict:
        plan = model.plan
        edges = []
        for name, node in plan.nodes.items():
            for port, src in node.inputs.items():
                edges.append({"from": src.node, "to": name, "port": port, "from_port": src.port})
        stats = model.stats
        return {
            "name": model.name,
            "file": plan.file,
            "state": model.state,
            "reason": model.reason,
            "requests": {"success": stats.success_count, "failure": stats.fail_count},
            "inputs": list(plan.inputs),
            "outputs": {name: str(src) for name, src in plan.outputs.items()},
            "edges": edges,
            "nodes": [self._node(model, name, window_s) for name in plan.nodes],
            "recent": self.traces.of(model.name),
        }

    def _node(self, model: ServedModel, name: str, window_s: float) -> dict:
        node = model.plan.nodes[name]
        out: dict = {
            "name": name,
            "kind": node.kind,
            "streaming": node.streaming,
            "when": node.when,
            "instances": [{"index": i, **inst.__dict__} for i, inst in enumerate(node.instances)],
        }
        node_model = self.repo.models.get(f"{model.name}.{name}")
        executor = model.executor
        if executor is None or node_model is None:
            return out | {"queued": 0, "success": 0, "failure": 0, "batches": 0, "rps": 0.0}
        s = node_statistics(self.repo, node_model)
        out |= {k: s[k] for k in ("queued", "success", "failure", "batches")}
        for planned, running in zip(out["instances"], s["placement"], strict=False):
            planned |= running  # where it runs now: backend, ready, restarts, Ray node id, pid
        out["batch_sizes"] = {str(k): v for k, v in sorted(s["batch_sizes"].items())}
        recent = executor.recent(name)  # type: ignore[attr-defined]
        if recent is not None:
            out |= recent.window(window_s, RATE_S)
        own = s["own"]
        if own:
            out["own"] = own
            if "generated_tokens" in own:
                out["tokens_per_s"] = self._token_rate(model.name, name, own["generated_tokens"])
        return out

    def _token_rate(self, pipeline: str, node: str, tokens: float) -> float:
        """Tokens/s since the previous look at least 1 s ago (the last rate in between)."""
        now = time.monotonic()
        key = (pipeline, node)
        last = self._tokens.get(key)
        if last is None:
            self._tokens[key] = (now, tokens, 0.0)
            return 0.0
        t, seen, rate = last
        if now - t >= 1.0:
            rate = max(0.0, tokens - seen) / (now - t)
            self._tokens[key] = (now, tokens, rate)
        return round(rate, 2)
