"""The live page in a real browser: headless Chromium loads `/dashboard` from a real
`pipectl serve` while a load runs, twice; every node of the files is drawn, the numbers move, and
the LLM view shows the engine's gauges. A screenshot is kept under $PIPECTL_ARTIFACTS (default
.artifacts/ at the repository root)."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

import pytest

from tests.server.browser import dump_dom, find_chromium, screenshot
from tests.server.conftest import API_KEY, AUTH, DATA, ROOT, start_server, stop_server

pytestmark = pytest.mark.integration
CHROMIUM = find_chromium()
ARTIFACTS = Path(os.environ.get("PIPECTL_ARTIFACTS", ROOT / ".artifacts"))


def _post(url: str, body: dict) -> int:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {**AUTH, "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Load:
    """Client threads sending requests back to back until stopped."""

    def __init__(self, base: str):
        self.base = base
        self.stop = threading.Event()
        self.sent = 0
        self.threads = [threading.Thread(target=self._branches, args=(i,)) for i in range(3)]
        self.threads.append(threading.Thread(target=self._chat))

    def _branches(self, index: int) -> None:
        n = 0
        while not self.stop.is_set():
            x = float(n % 3) - 0.5 + index  # some negative: the conditional node is skipped
            _post(f"{self.base}/v2/models/branches/generate", {"x": [x]})
            n += 1
            self.sent += 1

    def _chat(self) -> None:
        while not self.stop.is_set():
            _post(f"{self.base}/v2/models/chat/generate", {"prompt": "Count: 1, 2, 3,"})
            self.sent += 1

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)


def _nodes(dom: str) -> dict[str, int]:
    """Drawn nodes and their `done` count, from the DOM."""
    return {m[0]: int(m[1]) for m in re.findall(r'data-node="([^"$]+)" data-success="(\d+)"', dom)}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip(
            "no Chromium found (looked for chromium, chromium-browser, google-chrome on PATH); "
            "`make test` installs Debian's chromium: apt-get install -y chromium"
        )
    log = tmp_path_factory.mktemp("dashboard") / "serve.log"
    files = [str(DATA / "branches.yaml"), str(DATA / "llm.yaml")]
    srv = start_server(files, "--api-key", API_KEY, log=log)
    yield srv
    stop_server(srv)


def test_live_page_draws_every_node_and_its_numbers_move(live_server, tmp_path):
    base = f"http://{live_server.http_url}"
    page = f"{base}/dashboard#key={API_KEY}"
    with Load(base):
        while _stats(base)["pipelines"][0]["nodes"][0]["success"] == 0:
            time.sleep(0.2)
        first = dump_dom(CHROMIUM, page)
        time.sleep(3)
        second = dump_dom(CHROMIUM, page)
        chat = dump_dom(CHROMIUM, f"{base}/dashboard?pipeline=chat#key={API_KEY}", 6000)
        shot = tmp_path / "dashboard.png"
        screenshot(CHROMIUM, page, str(shot))
    assert 'id="error" hidden' in first, first
    before, after = _nodes(first), _nodes(second)
    assert set(before) == set(after) == {"left", "right", "join", "positive"}, after
    for node in ("left", "right", "join"):
        assert after[node] > before[node] > 0, (node, before, after)
    assert re.search(r'class="node conditional" data-node="positive"', second)
    assert "when: x &gt; 0" in second
    assert "cpu ×2" in second  # right's two instances
    assert 'data-edge="left-&gt;join"' in second and 'data-edge="right-&gt;join"' in second
    rps = re.findall(r'data-metric="rps"[^>]*>([\d.,]+)<', second)
    assert rps and any(float(r.replace(",", "")) > 0 for r in rps), rps
    assert re.search(r'data-metric="compute_ms"[^>]*>[\d.]+ / [\d.]+<', second)
    assert 'data-gantt-node="left"' in second and 'data-gantt-node="right"' in second
    for gauge in ("running sequences", "KV blocks in use", "prefix-cache hit rate", "tokens/s"):
        assert f'data-llm="{gauge}"' in chat, gauge
    assert 'data-node="generate"' in chat
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "dashboard.png")


def _stats(base: str, key: str | None = API_KEY) -> dict:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(f"{base}/v2/stats/live", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_stats_live_needs_the_key_and_the_page_does_not(live_server):
    base = f"http://{live_server.http_url}"
    with pytest.raises(urllib.error.HTTPError) as denied:
        _stats(base, key=None)
    assert denied.value.code == 401
    with urllib.request.urlopen(f"{base}/dashboard", timeout=10) as response:
        assert b"/dashboard/static/dashboard.js" in response.read()
    with urllib.request.urlopen(f"{base}/dashboard/static/dashboard.js", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
    bad = urllib.request.Request(f"{base}/v2/stats/live?window_s=x", headers=AUTH)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=10)
    assert refused.value.code == 400
    assert "window_s" in json.load(refused.value)["error"]
    doc = _stats(base)
    names = [p["name"] for p in doc["pipelines"]]
    assert names == ["branches", "chat"]
    branches = doc["pipelines"][0]
    assert {e["from"] + ">" + e["to"] for e in branches["edges"]} >= {"left>join", "right>join"}
    assert [len(n["instances"]) for n in branches["nodes"]] == [1, 2, 1, 1]


@pytest.mark.slow
def test_rag_pipeline_live_page(tmp_path):
    """pipelines/rag.yaml as shipped (answers cut to 24 tokens): every node drawn, `encode`
    marked conditional, the LLM's gauges shown, a screenshot kept."""
    index = ROOT / "samples" / "index"
    if CHROMIUM is None:
        pytest.skip("no Chromium found; `make test` installs Debian's chromium")
    if not (index / "index.faiss").exists():
        pytest.skip("samples/index is not built (`make index` builds it)")
    text = (ROOT / "pipelines" / "rag.yaml").read_text()
    text = text.replace("index: ../samples/index", f"index: {index}")
    (tmp_path / "rag.yaml").write_text(text.replace("max_tokens: 128", "max_tokens: 24"))
    for name in ("rag_steps.py", "rag_prompt.j2"):
        shutil.copy(ROOT / "pipelines" / name, tmp_path / name)
    srv = start_server([str(tmp_path / "rag.yaml")], "--api-key", API_KEY, log=tmp_path / "log")
    try:
        base = f"http://{srv.http_url}"
        for query in ("How do I read a JSON file?", "Hello!"):  # the greeting skips retrieval
            assert _post(f"{base}/v2/models/rag/generate", {"query": query}) == 200
        page = f"{base}/dashboard#key={API_KEY}"
        dom = dump_dom(CHROMIUM, page, 6000)
        shot = tmp_path / "dashboard-rag.png"
        screenshot(CHROMIUM, page, str(shot), size="1950,1000")
    finally:
        stop_server(srv)
    drawn = _nodes(dom)
    assert set(drawn) == {"route", "encode", "search", "rerank", "prompt", "generate"}, drawn
    assert drawn["route"] == 2 and drawn["encode"] == 1  # the greeting skipped encode
    assert 'class="node conditional" data-node="encode"' in dom
    assert 'data-llm="KV blocks in use"' in dom
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "dashboard-rag.png")
