"""The model's tokenizer and chat template, from a HF folder or a GGUF file's metadata, offline."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

# Normalizers (NFKC and the like) can shorten text a little before it is split into tokens, so the
# lower bound on a text's token count leaves this factor of room
_NORMALIZATION_ROOM = 4
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece byte fallback


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet read backwards: each of the 256 bytes is written as one
    printable character (printable Latin-1 as itself, the rest from U+0100 on), as in OpenAI's
    GPT-2 encoder.py `bytes_to_unicode`; Llama 3, Qwen and SmolLM2 vocabularies use it."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    chars = {b: chr(b) for b in kept}
    extra = (b for b in range(256) if b not in chars)
    chars.update({b: chr(256 + n) for n, b in enumerate(extra)})
    return {c: b for b, c in chars.items()}


_BYTE_DECODER = _byte_decoder()


class Tokenizer:
    """Encode prompts, render chats, and detokenize output incrementally for streaming."""

    def __init__(self, path: str | Path):
        import os

        from nodes.hf_loading import hf_from_pretrained

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = Path(path)
        if path.is_dir():
            self.hf = hf_from_pretrained("AutoTokenizer", str(path))
        else:  # transformers builds a fast tokenizer from the GGUF metadata
            self.hf = hf_from_pretrained("AutoTokenizer", str(path.parent), gguf_file=path.name)
        # the Rust tokenizer decodes several times faster than the Python wrapper
        self._fast = getattr(self.hf, "_tokenizer", None) or getattr(
            self.hf, "backend_tokenizer", None
        )
        self.eos_token_id = self.hf.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text)

    def decode(self, ids: list[int]) -> str:
        if self._fast is not None:
            return self._fast.decode(ids, skip_special_tokens=True)
        return self.hf.decode(ids, skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        """One token's text, special tokens included (for logprobs)."""
        if self._fast is not None:
            return self._fast.decode([token_id], skip_special_tokens=False)
        return self.hf.decode([token_id], skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """One token's own UTF-8 bytes (OpenAI's logprobs `bytes`, which rebuild a character
        split over tokens): a byte-level BPE piece mapped back to its bytes, a byte-fallback
        piece `<0xE6>` as that byte, else (special tokens, other vocabularies) the token's text.
        A token holding part of a multi-byte character gives that part, not U+FFFD's bytes."""
        piece = self.hf.convert_ids_to_tokens(token_id)
        if isinstance(piece, str) and token_id not in self._special_ids:
            if match := _BYTE_PIECE.fullmatch(piece):
                return bytes([int(match[1], 16)])
            if self._byte_level and all(c in _BYTE_DECODER for c in piece):
                return bytes(_BYTE_DECODER[c] for c in piece)
        return self.token_text(token_id).encode()

    @cached_property
    def _special_ids(self) -> frozenset[int]:
        return frozenset(self.hf.all_special_ids)

    @cached_property
    def _byte_level(self) -> bool:
        """The vocabulary is byte-level BPE (its decoder is ByteLevel)."""
        return self._fast is not None and "ByteLevel" in str(self._fast.decoder)

    def apply_chat(self, messages: list[dict]) -> list[int]:
        """Token ids of a chat in the model's template, ready for the assistant's turn."""
        return self.encode_chat(self.render_chat(messages))

    def render_chat(self, messages: list[dict]) -> str:
        """A chat as text in the model's template, ready for the assistant's turn."""
        if not self.hf.chat_template:
            raise ValueError("this model's tokenizer has no chat template; send a plain prompt")
        return self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode_chat(self, text: str) -> list[int]:
        """Token ids of a chat rendered by `render_chat` (its special tokens are in the text)."""
        return self.hf.encode(text, add_special_tokens=False)

    @cached_property
    def max_token_bytes(self) -> int:
        """The longest token's text in UTF-8 bytes (special tokens included), so that a text of
        B bytes has at least B / max_token_bytes tokens."""
        return max(len(self.token_text(i).encode()) for i in range(len(self.hf))) or 1

    def surely_longer_than(self, text: str, num_tokens: int) -> bool:
        """True when `text` certainly has more than `num_tokens` tokens, judged from its length
        alone (no tokenizing: a 24 MB prompt took 36 s to tokenize on one core)."""
        bound = num_tokens * self.max_token_bytes * _NORMALIZATION_ROOM
        return len(text) > bound or len(text.encode()) > bound

    def detokenize(self, token_ids: list[int], prefix_offset: int, read_offset: int, final=False):
        """New text since `read_offset`, decoded with a few tokens of context so that merges and
        spaces come out right; holds back while the tail is an incomplete UTF-8 character (unless
        `final`). Returns (new_text, prefix_offset, read_offset)."""
        prefix = self.decode(token_ids[prefix_offset:read_offset])
        full = self.decode(token_ids[prefix_offset:])
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            return full[len(prefix) :], read_offset, len(token_ids)
        return "", prefix_offset, read_offset
