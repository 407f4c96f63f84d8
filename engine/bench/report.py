"""`pipectl bench` output: a table (client side per level, then the server's per-node split),
JSON (`-o json`, the summaries of engine/bench/load.py as they are) and CSV (`--csv`)."""

from __future__ import annotations

import csv
import io


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def table(report: dict) -> str:
    levels = report["levels"]
    streaming = any("ttft_ms" in level for level in levels)
    head = f"{'concurrency':>11} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>6}"
    if streaming:
        head += f" {'TTFT p50':>8} {'TTFT p99':>8} {'ITL p50':>8} {'ITL p99':>8} {'tok/s':>8}"
    lines = [f"{report['model']} ({report['target']}), {report['duration_s']:g} s per level", head]
    for level in levels:
        lat = level["latency_ms"]
        row = (
            f"{level['concurrency']:>11} {level['requests']:>9} {level['rps']:>9.1f} "
            f"{_ms(lat['p50']):>8} {_ms(lat['p90']):>8} {_ms(lat['p99']):>8} {level['errors']:>6}"
        )
        if streaming:
            t, i = level.get("ttft_ms", {}), level.get("itl_ms", {})
            row += (
                f" {_ms(t.get('p50')):>8} {_ms(t.get('p99')):>8} {_ms(i.get('p50')):>8}"
                f" {_ms(i.get('p99')):>8} {level.get('tokens_per_s', 0):>8.1f}"
            )
        lines.append(row)
        for example in level["error_examples"]:
            lines.append(f"{'':>11} error: {example}")
    if any(level["nodes"] for level in levels):
        lines += ["", "server side, per node (in the measured window):"]
        lines.append(
            f"{'concurrency':>11} {'node':<16} {'items':>8} {'mean batch':>10} "
            f"{'queue ms/item':>13} {'compute ms/batch':>16} {'failures':>8}"
        )
        for level in levels:
            for node, n in level["nodes"].items():
                batch = "-" if n["mean_batch"] is None else f"{n['mean_batch']:.1f}"
                lines.append(
                    f"{level['concurrency']:>11} {node:<16} {n['items']:>8} {batch:>10} "
                    f"{_ms(n['queue_ms']):>13} {_ms(n['compute_ms']):>16} {n['failures']:>8}"
                )
    search = report.get("search")
    if search:
        best = search["concurrency"]
        lines.append("")
        if best:
            lines.append(f"highest concurrency with p99 <= {search['target_p99_ms']:g} ms: "
                         f"{best} ({search['rps']:.1f} req/s, p99 {search['p99_ms']:.2f} ms)")  # fmt: skip
        else:
            lines.append(f"no concurrency met p99 <= {search['target_p99_ms']:g} ms")
    return "\n".join(lines)


COLUMNS = ("concurrency", "requests", "rps", "errors")
STATS = ("latency_ms", "ttft_ms", "itl_ms")


def to_csv(report: dict) -> str:
    """One row per level: counts, latency/TTFT/ITL mean and percentiles, tokens/s."""
    out = io.StringIO()
    writer = csv.writer(out)
    header = [*COLUMNS, *(f"{s}_{p}" for s in STATS for p in ("mean", "p50", "p90", "p99"))]
    writer.writerow([*header, "tokens_per_s"])
    for level in report["levels"]:
        row = [level[c] for c in COLUMNS]
        for stat in STATS:
            values = level.get(stat) or {}
            row += [values.get(p, "") for p in ("mean", "p50", "p90", "p99")]
        writer.writerow([*row, level.get("tokens_per_s", "")])
    return out.getvalue()
