"""Build samples/corpus.jsonl from the docstrings of this Python's standard library (PSF licence).

One passage per module, class, function or method docstring of 20-200 words (longer ones are cut
at a paragraph or sentence boundary): {"id": "module.Class.method", "text": "module.Class.method:
docstring"}, plus the language reference topics that `help()` shows (pydoc_data.topics) in
passages of up to 120 words: {"id": "topic.NAME.N", ...}. Standard library only, so any Python >= 3.10 can rebuild it:

    python samples/make_corpus.py [--out samples/corpus.jsonl]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import pkgutil
import re
import sys
import warnings
from pathlib import Path

MIN_WORDS = 20
MAX_WORDS = 200
TOPIC_WORDS = 120
# modules with side effects on import, GUI toolkits, test suites and deprecated shims
SKIP = {
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3",
    "ensurepip", "venv", "pydoc_data", "__main__", "__future__", "__hello__", "__phello__",
    "distutils", "msilib", "winreg", "winsound", "nturl2path", "_msi", "msvcrt", "_winapi",
    "sre_compile", "sre_parse", "sre_constants", "xxsubtype", "xxlimited", "asynchat", "asyncore",
    "smtpd", "imp",
}  # fmt: skip


def _module_names() -> list[str]:
    """Public stdlib modules and their public submodules, sorted."""
    names: set[str] = set()
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in SKIP:
            continue
        names.add(name)
        module = _import(name)
        if module is None or not hasattr(module, "__path__"):
            continue
        for info in pkgutil.walk_packages(module.__path__, prefix=name + "."):
            parts = info.name.split(".")
            if any(p.startswith("_") or p in SKIP or p == "tests" for p in parts):
                continue
            names.add(info.name)
    return sorted(names)


def _import(name: str):
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - a module that cannot import here is simply left out
        return None


def _clip(doc: str) -> str | None:
    """The docstring as one passage of MIN_WORDS..MAX_WORDS words, or None when too short."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc) if p.strip()]
    kept: list[str] = []
    count = 0
    for para in paragraphs:
        words = len(para.split())
        if count + words > MAX_WORDS:
            if not kept:  # a single long paragraph: cut at the last sentence that fits
                sentences = re.split(r"(?<=[.!?])\s+", para)
                for sentence in sentences:
                    n = len(sentence.split())
                    if count + n > MAX_WORDS:
                        break
                    kept.append(sentence)
                    count += n
            break
        kept.append(para)
        count += words
    if count < MIN_WORDS:
        return None
    return " ".join(kept) if len(kept) > 1 and not paragraphs[0].endswith(":") else "\n".join(kept)


def _members(module) -> list[tuple[str, object]]:
    """(dotted name, object) for the module, its own public classes and functions, and methods."""
    out: list[tuple[str, object]] = [(module.__name__, module)]
    for name, obj in sorted(vars(module).items()):
        owner = getattr(obj, "__module__", None) or ""
        # objects defined here, or in a private accelerator module (_io, _collections) re-exported here
        if name.startswith("_") or not (owner == module.__name__ or owner.startswith("_")):
            continue
        if inspect.isclass(obj):
            out.append((f"{module.__name__}.{name}", obj))
            for attr, member in sorted(vars(obj).items()):
                if attr.startswith("_"):
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if inspect.isroutine(member) or isinstance(member, property):
                    out.append((f"{module.__name__}.{name}.{attr}", member))
        elif inspect.isroutine(obj):
            out.append((f"{module.__name__}.{name}", obj))
    return out


def _topic_passages() -> list[tuple[str, str]]:
    """(id, text) for the language reference topics of `help()`: paragraphs (long ones split
    into sentences) packed into passages of at most TOPIC_WORDS words."""
    from pydoc_data.topics import topics

    out: list[tuple[str, str]] = []
    for name in sorted(topics):
        units: list[str] = []
        for para in re.split(r"\n\s*\n", topics[name]):
            para = " ".join(para.split())
            if len(para.split()) > TOPIC_WORDS:
                units.extend(re.split(r"(?<=[.!?])\s+", para))
            elif para:
                units.append(para)
        chunk: list[str] = []
        words = 0
        number = 0
        for unit in units + [""]:
            n = len(unit.split())
            if chunk and (not unit or words + n > TOPIC_WORDS):
                if words >= MIN_WORDS:
                    out.append((f"topic.{name}.{number}", "\n".join(chunk)))
                    number += 1
                chunk, words = [], 0
            if unit and n <= TOPIC_WORDS:
                chunk.append(unit)
                words += n
    return out


def build(out: Path) -> int:
    """Write the corpus to `out`; return the number of passages."""
    seen_docs: set[str] = set()
    count = 0
    with out.open("w", encoding="utf-8") as fh:
        for module_name in _module_names():
            module = _import(module_name)
            if module is None:
                continue
            for dotted, obj in _members(module):
                doc = inspect.getdoc(obj) if not isinstance(obj, property) else obj.__doc__
                if not doc:
                    continue
                text = _clip(inspect.cleandoc(doc))
                if text is None or text in seen_docs:
                    continue
                seen_docs.add(text)
                record = {"id": dotted, "text": f"{dotted}: {text}"}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        for topic_id, text in _topic_passages():
            name = topic_id.split(".")[1]
            record = {"id": topic_id, "text": f"{name} (Python language reference): {text}"}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("corpus.jsonl"))
    args = parser.parse_args()
    count = build(args.out)
    size = args.out.stat().st_size
    print(f"{args.out}: {count} passages, {size / 1e6:.2f} MB (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
