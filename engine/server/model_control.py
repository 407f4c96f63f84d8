"""Model control over a model repository folder, in Triton's terms (`--model-repository`,
`--model-control-mode none|explicit|poll`, `--repository-poll-secs`, `--load-model`).

The folder holds pipeline files `DIR/*.yaml` (the file's `name` and `version: N`), or Triton's
layout `DIR/NAME/N/pipeline.yaml` (the folders give name and version). A model's
`version_policy` (latest, all or specific; read from its highest version's file) picks the
versions served.

- none: every model is loaded at start; load/unload requests are refused.
- explicit: only `--load-model` names at start; `load` (re)loads and `unload` unloads one model
  (gRPC RepositoryModelLoad/Unload, HTTP POST /v2/repository/models/NAME/load|unload).
- poll: like none, then every `--repository-poll-secs` changed or added files are (re)loaded and
  models whose files are gone are unloaded.

A (re)load never drops a request: the new version is compiled and loaded beside the old one,
requests switch to it once it is READY, and the old one drains its in-flight requests (streams
included) before it stops and frees its threads and memory. When the new file fails to compile or
load, the old version keeps serving; the error goes to the caller, the log and RepositoryIndex.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from engine.errors import InvalidInput, NodeError, NotFound, PipelineError, RequestError
from engine.server.load_errors import describe_compile_error, load_failure
from engine.server.versions import UNAVAILABLE, UNLOADING, PipelineVersion, build_version
from engine.spec import MAX_VERSION  # a model version is an int64, as in Triton

MODES = ("none", "explicit", "poll")


@dataclass(frozen=True)
class ModelFile:
    """One version of one model in the repository folder."""

    name: str
    version: int
    path: Path
    stamp: tuple  # (mtime_ns, size, sha256): a changed file has a new stamp
    layout: str  # "file" (DIR/x.yaml) or "folder" (DIR/NAME/N/pipeline.yaml)
    # other files claiming the same name and version: the version is refused while any exists
    # (Triton's model names are unique in a repository; never silently pick one of them)
    duplicates: tuple[Path, ...] = ()

    def conflict(self) -> str:
        """Why this version cannot load because other files claim it ("" when none do)."""
        if not self.duplicates:
            return ""
        files = ", ".join(str(p) for p in (self.path, *self.duplicates))
        return (
            f"model {self.name!r} version {self.version} is defined by {len(self.duplicates) + 1} "
            f"files: {files}; a name and version must be unique in the repository (rename or "
            "renumber all but one)"
        )


def _stamp(path: Path) -> tuple:
    data = path.read_bytes()
    st = path.stat()
    return (st.st_mtime_ns, st.st_size, hashlib.sha256(data).hexdigest())


def _add(found: dict[str, dict[int, ModelFile]], model_file: ModelFile) -> None:
    """Record a version; a second file claiming it is kept as a duplicate, never dropped."""
    versions = found.setdefault(model_file.name, {})
    first = versions.get(model_file.version)
    if first is None:
        versions[model_file.version] = model_file
    else:
        duplicates = (*first.duplicates, model_file.path)
        versions[model_file.version] = dataclasses.replace(first, duplicates=duplicates)


def scan(directory: Path) -> dict[str, dict[int, ModelFile]]:
    """Every model version in the folder: name -> version -> file (with the other files, if
    any, that claim the same name and version)."""
    found: dict[str, dict[int, ModelFile]] = {}
    for path in sorted(directory.glob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            data = None  # still listed, under its file name: loading it reports the problem
        data = data if isinstance(data, dict) else {}
        name = data.get("name") if isinstance(data.get("name"), str) else path.stem
        version = data.get("version", 1)
        version = version if isinstance(version, int) and 1 <= version <= MAX_VERSION else 1
        _add(found, ModelFile(name, version, path, _stamp(path), "file"))
    for path in sorted(directory.glob("*/[0-9]*/pipeline.y*ml")):
        folder = path.parent
        if folder.name.isdigit() and int(folder.name) >= 1:  # above int64: refused at load
            name, version = folder.parent.name, int(folder.name)
            _add(found, ModelFile(name, version, path, _stamp(path), "folder"))
    return found


def compile_model_file(model_file: ModelFile):
    """The Plan of one model version; the folder layout names it and numbers its version."""
    from engine.compiler import compile_file

    plan = compile_file(model_file.path)
    if model_file.layout == "folder":
        plan = dataclasses.replace(plan, name=model_file.name, version=model_file.version)
    return plan


def wanted_versions(versions: dict[int, ModelFile]) -> list[int]:
    """The versions the model's version_policy serves (from its highest version's file)."""
    from engine.spec import load_spec

    policy = None
    try:
        policy = load_spec(versions[max(versions)].path).version_policy
    except PipelineError:
        pass  # the file's own load reports its problems; the default policy applies meanwhile
    if policy is None or policy.policy == "latest":
        return sorted(versions)[-(policy.num_versions if policy else 1) :]
    if policy.policy == "all":
        return sorted(versions)
    missing = [v for v in policy.versions if v not in versions]
    if missing:
        raise InvalidInput(
            f"version_policy lists versions {missing} that are not in the repository "
            f"(there: {sorted(versions)})"
        )
    return sorted(policy.versions)


class ModelControl:
    """Loads, reloads and unloads the repository's models into a Repository (module docstring)."""

    def __init__(self, repo, directory: str | Path, mode: str = "none", *, poll_secs: float = 5.0,
                 drain_timeout_s: float = 30.0, say: Callable[[str], None] = print) -> None:  # fmt: skip
        if mode not in MODES:
            raise ValueError(f"model control mode {mode!r}; modes: {', '.join(MODES)}")
        self.repo, self.directory, self.mode = repo, Path(directory), mode
        self.poll_secs, self.drain_timeout_s, self.say = poll_secs, drain_timeout_s, say
        self.managed: set[str] = set()  # models loaded from the folder
        self._locks: dict[str, asyncio.Lock] = {}
        self._seen: dict[str, tuple] = {}  # name -> the files' stamps last (re)loaded (poll)
        self._retiring: set[asyncio.Task] = set()

    async def _scan(self) -> dict[str, dict[int, ModelFile]]:
        return await asyncio.to_thread(scan, self.directory)

    # ---- the RPCs ------------------------------------------------------------------------------
    def check_explicit(self, action: str) -> None:
        """Load/unload requests are for explicit mode only (Triton refuses them otherwise)."""
        if self.mode != "explicit":
            raise InvalidInput(
                f"cannot {action} models: the model control mode is {self.mode!r}; start the "
                "server with --model-control-mode explicit to load and unload models by request"
            )

    async def load(self, name: str) -> None:
        """Load or reload `name` (every version its policy serves) beside what serves now."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            files = await self._scan()
            if name not in files:
                self._refuse_node_model("load", name)
                there = ", ".join(sorted(files)) or "(none)"
                raise NotFound(f"no model {name!r} in the model repository {self.directory}; "
                               f"models there: {there}")  # fmt: skip
            versions = files[name]
            self._seen[name] = _signature(versions)
            self._forget_missing(name, versions)
            loaded, errors = [], []
            for version in wanted_versions(versions):
                pv, error = await self._load_version(versions[version])
                if pv is not None:
                    loaded.append(pv)
                else:
                    errors.append(error)
            self._switch(name, loaded, errors, set(wanted_versions(versions)))
        if errors:  # a bad file is the caller's to fix (INVALID_ARGUMENT), a failed load INTERNAL
            what = "; ".join(f"version {v}: {e}" for v, e, _ in errors)
            error_type = InvalidInput if all(t is InvalidInput for *_, t in errors) else NodeError
            raise error_type(f"failed to load model {name!r}: {what}")

    async def unload(self, name: str) -> None:
        """Stop routing requests to `name`; its versions drain, then free their memory."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            table = self.repo.versions.pop(name, None)
            if table is None:
                if name in await self._scan():
                    return  # in the folder but not loaded: nothing to do (as Triton)
                self._refuse_node_model("unload", name)
                raise NotFound(f"model {name!r} is neither loaded nor in {self.directory}")
            self.repo.route(name)
            self.managed.discard(name)
            for pv in table.values():
                self.repo.unavailable[(name, pv.version)] = "unloaded (draining in-flight requests)"
                self._retire(pv)
            self.say(f"unloading {name!r} (versions {', '.join(sorted(table, key=int))})")

    def _refuse_node_model(self, action: str, name: str) -> None:
        """A `PIPELINE.NODE` model is one of a pipeline's composing models: it loads and
        unloads with its pipeline, never alone (InvalidInput saying which to use)."""
        pipeline, _, node = name.partition(".")
        if node and any(name in pv.models for pv in self.repo.versions.get(pipeline, {}).values()):
            raise InvalidInput(
                f"cannot {action} {name!r} alone: it is node {node!r} of pipeline {pipeline!r} "
                f"and loads and unloads with it; {action} {pipeline!r}"
            )

    def _forget_missing(self, name: str, versions: dict[int, ModelFile]) -> None:
        """Drop the index's failed or unloaded entries of versions no longer in the folder:
        the index lists what the repository holds (Triton), not what it once held."""
        for key in [k for k in self.repo.unavailable if k[0] == name]:
            if int(key[1]) not in versions:
                del self.repo.unavailable[key]

    # ---- loading and switching -----------------------------------------------------------------
    async def _load_version(self, model_file: ModelFile) -> tuple[PipelineVersion | None, tuple]:
        """(the loaded version, ()) or (None, (version, reason, error type))."""
        name, version = model_file.name, model_file.version
        if model_file.conflict() or version > MAX_VERSION:
            why = model_file.conflict() or (
                f"{model_file.path}: version folder {version} is above the largest model "
                f"version, {MAX_VERSION} (an int64)"
            )
            return None, (version, self._failed(model_file, why), InvalidInput)
        self.say(f"loading {name!r} version {version} from {model_file.path}")
        try:
            plan = await asyncio.to_thread(compile_model_file, model_file)
        except PipelineError as exc:
            reason = self._failed(model_file, describe_compile_error(exc, model_file.path))
            return None, (version, reason, InvalidInput)
        pv = build_version(plan, str(model_file.path), model_file.stamp)
        try:
            await asyncio.to_thread(pv.start)
        except Exception as exc:  # noqa: BLE001 - reported; what serves now keeps serving
            await asyncio.to_thread(pv.stop, False)
            reason, error_type = load_failure(exc, model_file.path)
            return None, (version, self._failed(model_file, reason), error_type)
        return pv, ()

    def _failed(self, model_file: ModelFile, reason: str) -> str:
        key = (model_file.name, str(model_file.version))
        serving = self.repo.versions.get(model_file.name, {}).get(key[1])
        if serving is not None:  # a reload of a served version: the old load keeps serving
            serving.reload_failure = f"reload failed, the previous load serves: {reason}"
            serving.set_state(serving.state, serving.reload_failure)
        self.repo.unavailable[key] = reason
        self.say(f"model {key[0]!r} version {key[1]} failed to load: {reason}")
        return reason

    def _switch(self, name: str, loaded: list, errors: list, wanted: set[int]) -> None:
        """Route to the new versions; retire what they replace (and, when every version loaded,
        the versions the policy no longer serves)."""
        old = dict(self.repo.versions.get(name, {}))
        table = dict(old)
        for pv in loaded:
            table[pv.version] = pv
            self.repo.unavailable.pop((name, pv.version), None)
        if not errors:
            table = {v: pv for v, pv in table.items() if int(v) in wanted}
        if not table:
            return
        self.repo.versions[name] = table
        self.repo.route(name)
        self.managed.add(name)
        for version, pv in old.items():
            if table.get(version) is not pv:
                self._retire(pv)
        if loaded:
            self.say(f"serving {name!r} versions {', '.join(sorted(table, key=int))}")

    def _retire(self, pv: PipelineVersion) -> None:
        task = asyncio.get_running_loop().create_task(self._drain_and_stop(pv))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _drain_and_stop(self, pv: PipelineVersion) -> None:
        pv.set_state(UNLOADING, f"draining {pv.inflight} in-flight requests")
        drained = await pv.wait_idle(self.drain_timeout_s)
        await asyncio.to_thread(pv.stop, drained)
        pv.set_state(UNAVAILABLE, "unloaded")
        if self.repo.unavailable.get((pv.name, pv.version), "").startswith("unloaded"):
            self.repo.unavailable[(pv.name, pv.version)] = "unloaded"
        late = "" if drained else f" (drain timed out after {self.drain_timeout_s:g} s)"
        self.say(f"{pv.name!r} version {pv.version} stopped{late}")

    # ---- start-up and polling ------------------------------------------------------------------
    async def start(self, load_models: tuple[str, ...] = ()) -> None:
        """The initial load: every model (none, poll) or the `load_models` (explicit; '*' all).
        Then the repository takes load/unload requests (and counts as ready with no model)."""
        files = await self._scan()
        names = sorted(files) if self.mode != "explicit" or "*" in load_models else load_models
        for name in names:
            try:
                await self.load(name)
            except RequestError as exc:
                self.say(str(exc))
        self.repo.control = self

    async def poll_once(self) -> None:
        """(Re)load models whose files changed or appeared; unload those whose files are gone."""
        files = await self._scan()
        for name, versions in files.items():
            if self._seen.get(name) != _signature(versions):
                try:
                    await self.load(name)
                except RequestError as exc:
                    self.say(f"poll: {exc}")
        for name in sorted(self.managed - files.keys()):
            self._seen.pop(name, None)
            await self.unload(name)

    async def poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_secs)
            try:
                await self.poll_once()
            except Exception as exc:  # noqa: BLE001 - the poller must outlive one bad scan
                self.say(f"poll failed: {type(exc).__name__}: {exc}")

    async def close(self) -> None:
        """Let versions being retired finish stopping (bounded by the drain timeout)."""
        if self._retiring:
            await asyncio.wait(list(self._retiring), timeout=self.drain_timeout_s + 30)


async def repository_index(repo, ready_only: bool = False) -> list[dict]:
    """Triton's RepositoryIndex (engine/server/describe.py), plus, with a model repository and
    without the `ready` filter, what the folder holds that no load reported on yet: a version
    that several files claim (UNAVAILABLE, naming them) and models never loaded (their name
    only, as Triton lists them)."""
    from engine.server.describe import repository_index as loaded_index

    index = loaded_index(repo, ready_only)
    if ready_only or repo.control is None:
        return index
    listed = {(e["name"], e.get("version", "")) for e in index}
    names = {e["name"] for e in index}
    for name, versions in sorted((await repo.control._scan()).items()):
        for version, model_file in sorted(versions.items()):
            if model_file.conflict() and (name, str(version)) not in listed:
                index.append({"name": name, "version": str(version), "state": UNAVAILABLE,
                              "reason": model_file.conflict()})  # fmt: skip
                names.add(name)
        if name not in names:
            index.append({"name": name})
    return index


def model_control(repo, action: str, parameters: dict) -> ModelControl:
    """The repository's ModelControl for a load/unload request, after refusing what it cannot
    honour: no repository, a mode other than explicit, and Triton's `config` / `file:` overrides.
    Unload takes Triton's `unload_dependents`, a boolean: a pipeline's nodes (its composing
    models) unload with it whichever the value; anything else is a 400 naming it."""
    control = repo.control
    if control is None:
        raise InvalidInput(
            f"cannot {action} models: this server has no model repository; start it with "
            "--model-repository DIR --model-control-mode explicit"
        )
    control.check_explicit(action)
    for key, value in parameters.items():
        if key != "unload_dependents" or action != "unload":
            raise InvalidInput(
                f"model {action} parameter {key!r} is not supported: edit the file in the "
                "repository folder, then load it"
            )
        if not isinstance(value, bool):  # a pipeline's nodes unload with it either way
            raise InvalidInput(
                f"model unload parameter 'unload_dependents' must be a boolean, got "
                f"{value!r:.40} ({type(value).__name__})"
            )
    return control


def check_repository_name(repo, name: str) -> None:
    """Triton's `repository_name` of a gRPC repository request: this server has one repository,
    so only "" or that repository (its folder's name or path as given) is honoured; any other
    name is refused naming it, never ignored."""
    control = repo.control
    known = () if control is None else (control.directory.name, str(control.directory))
    if name and name not in known:
        there = f"{known[0]!r} ({known[1]})" if known else "none"
        raise InvalidInput(
            f"repository_name {name!r:.80} is not a repository of this server; its repository: "
            f"{there} (or leave repository_name empty)"
        )


def _signature(versions: dict[int, ModelFile]) -> tuple:
    return tuple(sorted((v, f.stamp, f.duplicates) for v, f in versions.items()))
