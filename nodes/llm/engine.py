"""LLMEngine: continuous batching over a paged KV cache, offline (`generate`) or streamed.

The step loop runs in its own thread and is the only code that touches the model, the scheduler and
the KV blocks; callers (any thread, or asyncio through `loop.call_soon_threadsafe`) only submit
requests and aborts through a queue and receive deltas through callbacks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import torch

from nodes.compute_dtype import resolve_dtype
from nodes.errors import InstanceLost, InvalidRequest
from nodes.llm.config import EngineConfig, derive_max_model_len
from nodes.llm.kv_cache import BlockManager
from nodes.llm.outputs import Completion, Delta, completion, merge
from nodes.llm.runner import ModelRunner
from nodes.llm.sampling import SamplingParams, sample
from nodes.llm.scheduler import Scheduler
from nodes.llm.sequence import Sequence
from nodes.llm.speculative import accept, verification_rows
from nodes.llm.structured import GrammarCompiler, advance
from nodes.llm.tokenizer import Tokenizer
from nodes.llm.weights import load_weights
from nodes.openmp import in_passing_thread, refuse_thread_count

Prompt = str | list[int]
_ids = itertools.count()


class LLMEngine:
    """Load a model (HF folder or GGUF) and serve generation requests with continuous batching."""

    def __init__(self, model: str | Path, config: EngineConfig | None = None):
        config = config or EngineConfig()
        self.dtype = resolve_dtype(config.dtype, config.device)  # auto → this device's dtype
        self.config = dataclasses.replace(config, dtype=self.dtype.dtype)
        refuse_thread_count(self.config.num_threads)
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        keep = self.config.quantization != "none" and self.config.device.startswith("cpu")
        max_len = functools.partial(derive_max_model_len, self.config.max_model_len)
        model_config, self.runner = in_passing_thread(self._load, model, keep, max_len)
        self.model_config = model_config
        self.tokenizer = Tokenizer(model)
        self.blocks = BlockManager(
            self.runner.num_blocks, self.config.block_size, self.config.enable_prefix_caching
        )
        self.scheduler = Scheduler(self.config, self.blocks, self.runner.max_model_len)
        self.max_model_len = self.runner.max_model_len
        self.eos_ids = set(model_config.eos_token_ids) | {self.tokenizer.eos_token_id} - {None}
        self._eos_tuple = tuple(t for t in self.eos_ids if t is not None)
        self.grammars = GrammarCompiler(self.tokenizer.hf, model_config.vocab_size, self._eos_tuple)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._seqs: dict[str, Sequence] = {}
        self._sinks: dict[str, Callable[[Delta], None]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.lost: BaseException | None = None  # what killed the step loop thread, if it died
        self.num_generated = 0
        self.num_draft_tokens = 0  # speculative proposals checked, and accepted
        self.num_accepted_tokens = 0

    def _load(self, model: str | Path, keep_quantized: bool, check) -> tuple:
        model_config, weights = load_weights(model, keep_quantized=keep_quantized, check=check)
        return model_config, ModelRunner(model_config, weights, self.config)

    def _make_seq(self, prompt: Prompt, params: SamplingParams, request_id: str | None) -> Sequence:
        if isinstance(prompt, str) and self.tokenizer.surely_longer_than(
            prompt, self.max_model_len
        ):
            raise InvalidRequest(
                f"prompt is {len(prompt.encode())} bytes: more tokens than max_model_len "
                f"{self.max_model_len}",
                field="prompt",
            )
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise InvalidRequest("empty prompt: give at least one token", field="prompt")
        if len(ids) >= self.max_model_len:
            raise InvalidRequest(
                f"prompt has {len(ids)} tokens; max_model_len is {self.max_model_len} "
                "(prompt and output tokens together)",
                field="prompt",
            )
        if params.max_tokens > self.max_model_len:
            raise InvalidRequest(
                f"max_tokens {params.max_tokens} is more than max_model_len "
                f"{self.max_model_len} (prompt and output tokens together)",
                field="max_tokens",
            )
        need = self.blocks.blocks_needed(min(len(ids) + params.max_tokens, self.max_model_len))
        if need > self.blocks.num_blocks:
            raise InvalidRequest(
                f"request needs {need} KV blocks but the cache has {self.blocks.num_blocks}; "
                f"raise kv_cache_bytes or lower max_tokens",
                field="max_tokens",
            )
        rid = request_id or f"req-{next(_ids)}"
        seq = Sequence(rid, ids, params, time.perf_counter())
        if params.response_format is not None:
            seq.grammar = self.grammars.matcher(params.response_format)
        return seq

    def add_request(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        request_id: str | None = None,
        sink: Callable[[Delta], None] | None = None,
    ) -> str:
        """Queue a request; `sink` (called on the loop thread) receives its deltas."""
        seq = self._make_seq(prompt, params or SamplingParams(), request_id)
        self._submit(seq, sink)
        return seq.request_id

    def _submit(self, seq: Sequence, sink: Callable[[Delta], None] | None) -> None:
        self._inbox.put(("add", seq, sink))
        self._wake.set()
        if self.lost is not None:  # the loop died meanwhile: nobody else will answer it
            self._fail_lost()

    def abort(self, request_id: str) -> None:
        """Stop a request; its KV blocks are freed before the next step."""
        self._inbox.put(("abort", request_id, None))
        self._wake.set()

    def _drain_inbox(self) -> list[Delta]:
        deltas = []
        while True:
            try:
                op, item, sink = self._inbox.get_nowait()
            except queue.Empty:
                return deltas
            if op == "add":
                self._seqs[item.request_id] = item
                if sink is not None:
                    self._sinks[item.request_id] = sink
                self.scheduler.add(item)
            elif (seq := self._seqs.pop(item, None)) is not None:
                self.scheduler.finish(seq, "abort")
                deltas.append(self._delta(seq, "", [], "abort"))

    def step(self) -> list[Delta]:
        """Apply queued submits and aborts, run one batch, sample; the deltas of this step."""
        deltas = self._drain_inbox()
        batch = self.scheduler.schedule()
        if not batch:
            return deltas
        logits, samplers = self.runner.run(batch)
        for seq, n in batch:
            seq.num_computed_tokens += n
            if not seq.num_draft:  # speculative ones commit once their proposals are checked
                self.blocks.commit(seq)
        if samplers:
            rows, spans = verification_rows(samplers)  # 1 + proposals rows per sequence
            with torch.inference_mode():  # penalties edit the (inference-mode) logits in place
                sampled = sample(logits, rows, self._eos_tuple)
            for seq, (first, count) in zip(samplers, spans):
                targets = sampled[0][first : first + count]
                out = self._verify(seq, targets) if seq.num_draft else targets
                deltas.append(self._emit(seq, out, first, sampled))
        return deltas

    def _verify(self, seq: Sequence, targets: list[int]) -> list[int]:
        """Keep the proposals the model agrees with, roll back the rest (tokens, computed
        count, blocks); the tokens this step yields."""
        drafts = seq.num_draft
        base = len(seq.token_ids) - drafts
        out = accept(seq.token_ids[base:], targets)
        del seq.token_ids[base:]
        seq.num_draft = 0
        seq.num_computed_tokens = base + len(out) - 1  # the last token and the accepted ones
        self.blocks.truncate(seq, base + len(out))
        self.blocks.commit(seq)
        self.num_draft_tokens += drafts
        self.num_accepted_tokens += len(out) - 1
        return out

    def _emit(self, seq: Sequence, out: list[int], first: int, sampled) -> Delta:
        """Append a step's tokens to the sequence (until it finishes): one Delta for them all."""
        _, logprobs, scores, tops = sampled
        parts = []
        for i, token in enumerate(out, start=first):
            delta = self._append(seq, token, logprobs[i] if logprobs else None)
            delta.scores = scores[i] if scores else None
            if tops and tops[i] is not None:
                delta.top_logprobs = [tops[i]]
            parts.append(delta)
            if delta.finished:
                break
        self.num_generated += len(parts)
        return merge(parts)

    def _append(self, seq: Sequence, token: int, logprob: float | None) -> Delta:
        p = seq.params
        seq.token_ids.append(token)
        if p.logprobs:
            seq.logprobs.append(logprob)
        reason = None
        stoppable = seq.num_output_tokens >= p.min_tokens  # vLLM's min_tokens: no stop before
        completed = seq.grammar is not None and advance(seq.grammar, token)  # response_format
        if (
            completed
            or stoppable
            and ((token in self.eos_ids and not p.ignore_eos) or token in p.stop_token_ids)
        ):
            reason = "stop"
        elif seq.num_output_tokens >= p.max_tokens or len(seq) >= self.max_model_len:
            reason = "length"
        new, seq.prefix_offset, seq.read_offset = self.tokenizer.detokenize(
            seq.token_ids, seq.prefix_offset, seq.read_offset, final=reason is not None
        )
        seq.text += new
        hold = 0
        if p.stop and stoppable:
            longest = max(map(len, p.stop))
            start = max(0, len(seq.text) - len(new) - longest + 1)
            found = [i for i in (seq.text.find(s, start) for s in p.stop) if i >= 0]
            if found:
                seq.text, reason = seq.text[: min(found)], "stop"
            hold = longest - 1  # a stop string may be starting at the tail: keep it back
        if reason is not None:
            hold = 0
            self.scheduler.finish(seq, reason)
            self._seqs.pop(seq.request_id, None)
        end = max(seq.sent_chars, len(seq.text) - hold)
        text, seq.sent_chars = seq.text[seq.sent_chars : end], end
        return self._delta(seq, text, [token], reason, [logprob] if p.logprobs else [])

    def _delta(self, seq, text, tokens, reason, logprobs=()) -> Delta:
        return Delta(
            seq.request_id, text, tokens, reason is not None, reason, seq.num_prompt_tokens,
            seq.num_output_tokens, seq.num_cached_tokens, list(logprobs),
        )  # fmt: skip

    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # the thread dies (only KeyboardInterrupt gets here)
            self.lost = exc
            self._fail_lost()
            raise

    def _fail_lost(self) -> None:
        """The loop thread is dead: end every request it held or had queued with an error
        delta (their streams raise InstanceLost), so that none waits forever."""
        why = f"the LLM engine's step loop died ({type(self.lost).__name__}: {self.lost})"
        pending = list(self._seqs.values())
        self._seqs.clear()
        while True:
            try:
                op, item, sink = self._inbox.get_nowait()
            except queue.Empty:
                break
            if op == "add":
                pending.append(item)
                if sink is not None:
                    self._sinks[item.request_id] = sink
        for seq in pending:
            delta = self._delta(seq, "", [], "error")
            delta.error = why
            if (sink := self._sinks.pop(seq.request_id, None)) is not None:
                sink(delta)

    def _serve(self) -> None:
        if self.config.num_threads:  # OpenMP thread counts are per thread: set it here too
            torch.set_num_threads(self.config.num_threads)
        while not self._stopping:
            if not self.scheduler.has_work() and self._inbox.empty():
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                deltas = self.step()
            except BaseException as exc:  # SystemExit too: fail the requests in flight
                if isinstance(exc, KeyboardInterrupt):
                    raise
                deltas = self._fail_all(exc)
            for delta in deltas:
                sink = self._sinks.pop(delta.request_id, None) if delta.finished else None
                sink = sink or self._sinks.get(delta.request_id)
                if sink is not None:
                    sink(delta)

    def _fail_all(self, exc: BaseException) -> list[Delta]:
        deltas = []
        for seq in list(self._seqs.values()):
            self.scheduler.finish(seq, "error")
            delta = self._delta(seq, "", [], "error")
            delta.error = f"{type(exc).__name__}: {exc}"
            deltas.append(delta)
        self._seqs.clear()
        return deltas

    def _raise_if_lost(self, error: str | None = None) -> None:
        if self.lost is not None:
            raise InstanceLost(error or f"the LLM engine's step loop died ({self.lost!r})")

    def start(self) -> None:
        """Start the step loop thread (done by `generate` and `stream` when needed). Raises
        InstanceLost once that thread has died: the engine must be loaded anew."""
        self._raise_if_lost()
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        """Stop the loop thread (requests in flight are left unfinished)."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None

    def generate(
        self, prompts: list[Prompt], params: SamplingParams | list[SamplingParams] | None = None
    ) -> list[Completion]:
        """Generate for every prompt (batched continuously); blocks until all are done."""
        plist = params if isinstance(params, list) else [params or SamplingParams()] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(plist)} sampling params")
        seqs = [self._make_seq(p, sp, None) for p, sp in zip(prompts, plist)]
        return [completion(parts) for parts in self._run_all(seqs)]

    def _run_all(self, seqs: list[Sequence]) -> list[list[Delta]]:
        """Submit the sequences, wait until all have finished; the deltas of each, in order."""
        parts: list[list[Delta]] = [[] for _ in seqs]
        done = threading.Semaphore(0)

        def sink(delta: Delta, i: int) -> None:
            parts[i].append(delta)
            if delta.finished:
                done.release()

        self.start()
        for i, seq in enumerate(seqs):
            self._inbox.put(("add", seq, functools.partial(sink, i=i)))
        self._wake.set()
        for _ in seqs:
            done.acquire()
        for deltas in parts:
            if deltas[-1].finish_reason == "error":
                self._raise_if_lost(f"generation failed: {deltas[-1].error}")
                raise RuntimeError(f"generation failed: {deltas[-1].error}")
        return parts

    async def stream(
        self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None
    ) -> AsyncIterator[Delta]:
        """Yield the request's deltas as they come; leaving early aborts it and frees its blocks."""
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[Delta] = asyncio.Queue()
        self.start()

        def sink(delta: Delta) -> None:
            try:
                loop.call_soon_threadsafe(deltas.put_nowait, delta)
            except RuntimeError:  # the consumer's event loop is closed: nobody listens
                pass

        # tokenizing and compiling a response_format grammar (seconds for a deep schema) release
        # the GIL: in a thread they hold up neither the event loop nor the step loop
        seq = await asyncio.to_thread(
            self._make_seq, prompt, params or SamplingParams(), request_id
        )
        rid = seq.request_id
        self._submit(seq, sink)
        finished = False
        try:
            while not finished:
                delta = await deltas.get()
                finished = delta.finished
                if delta.finish_reason == "error":
                    self._raise_if_lost(f"generation failed: {delta.error}")
                    raise RuntimeError(f"generation failed: {delta.error}")
                yield delta
        finally:
            if not finished:
                self.abort(rid)

    def score_next_token(self, prompts: list[Prompt], token_ids: list[int]) -> list[list[float]]:
        """Per prompt, the log-probabilities of `token_ids` as its next token (prefill only)."""
        params = SamplingParams(max_tokens=1, temperature=0, score_token_ids=tuple(token_ids))
        seqs = [self._make_seq(p, params, None) for p in prompts]
        rows = [deltas[-1].scores for deltas in self._run_all(seqs)]
        if any(row is None for row in rows):
            raise RuntimeError("scoring failed: a request was stopped before its first token")
        return rows

    def statistics(self) -> dict[str, float]:
        """Gauges for monitoring: sequences, KV blocks, prefix-cache hit rate, tokens so far."""
        blocks = self.blocks
        return {
            "running": len(self.scheduler.running),
            "waiting": len(self.scheduler.waiting),
            "kv_blocks_used": blocks.num_blocks - blocks.num_free,
            "kv_blocks_total": blocks.num_blocks,
            "prefix_cache_hit_rate": blocks.cache_hits / max(1, blocks.cache_queries),
            "preemptions": self.scheduler.num_preemptions,
            "generated_tokens": self.num_generated,
            "spec_draft_tokens": self.num_draft_tokens,
            "spec_accepted_tokens": self.num_accepted_tokens,
            "spec_acceptance_rate": self.num_accepted_tokens / max(1, self.num_draft_tokens),
        }
