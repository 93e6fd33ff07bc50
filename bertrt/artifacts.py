"""Artifacts: checked before any work, published atomically with their sidecars, described by JSON sidecars.

Every stage that writes files follows the same three steps (new stages, e.g. build and serve, too):

1. `check_outputs(outputs, inputs)` before any work: no output may be (through a symlink, `..` or a hard link)
   one of the inputs or another output, nor a directory, nor in a place that cannot be written.
2. `atomic_outputs(*paths)` yields temporaries beside the targets and, when the block succeeds, renames them all
   onto the targets together (under a lock on their directories, with Ctrl-C and SIGTERM held off), so a reader or a
   concurrent run never sees an artifact with the sidecars of another run; a failed or interrupted run leaves
   the previous files intact and no temporary behind.
3. `sidecar_record(artifact, content, ...)` describes the artifact from its (temporary) content.

Files get the mode the umask gives, as any other program's output would.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import secrets
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import bertrt
from bertrt.errors import BertrtError
from bertrt.interrupts import held

# Tools whose versions change what an artifact contains.
_TOOLS = ("numpy", "onnx", "onnxruntime", "onnx-graphsurgeon", "polygraphy", "tensorflow-cpu", "tf2onnx", "tokenizers")

PathLike = str | os.PathLike[str]


def sha256_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    versions = {"bertrt": bertrt.__version__, "python": platform.python_version()}
    for name in _TOOLS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def sidecar_path(artifact: PathLike) -> Path:
    return Path(f"{artifact}.json")


# --- 1. outputs never destroy inputs ------------------------------------------------------------------------------
def _identity(path: Path) -> tuple[Path, tuple[int, int] | None]:
    """The resolved path (symlinks and `..` followed) and, for an existing file, its (device, inode): two names of
    one file (hard links) must count as the same file too."""
    resolved = path.resolve()
    try:
        st = resolved.stat()
    except OSError:
        return resolved, None
    return resolved, (st.st_dev, st.st_ino)


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def _check_writable(output: Path) -> None:
    """Raise unless `output` can be created: probe with a real file (os.access says yes to root on read-only
    filesystems and in /proc)."""
    if output.is_dir():
        raise BertrtError(f"{output}: output is a directory (give a file name)")
    ancestor = _existing_ancestor(output.resolve())
    if not ancestor.is_dir():
        raise BertrtError(f"{output}: cannot write there ({ancestor} is not a directory)")
    probe = ancestor / f".{output.name}.{secrets.token_hex(4)}.probe"
    with held():  # an interrupt between creating and removing the probe would leave it behind
        try:
            os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise BertrtError(f"{output}: cannot write there ({exc.strerror or exc})") from None
        probe.unlink(missing_ok=True)


def check_outputs(outputs: Iterable[PathLike | None], inputs: Iterable[PathLike | None]) -> None:
    """Before any work: refuse (BertrtError, one line) an output that is an input (resolved: symlinks, `..`, hard
    links), an output listed twice, an output that is a directory and an output that cannot be written. `inputs`
    may hold directories (a checkpoint directory): an output equal to one is refused as a directory. None entries
    (optional files not given) are skipped."""
    ins = [(Path(p), *_identity(Path(p))) for p in inputs if p is not None]
    seen: dict[Path, Path] = {}
    for output in (Path(p) for p in outputs if p is not None):
        resolved, ident = _identity(output)
        for given, in_resolved, in_ident in ins:
            if resolved == in_resolved or (ident is not None and ident == in_ident):
                raise BertrtError(f"{output}: the output would overwrite the input {given}")
        if resolved in seen:
            raise BertrtError(f"{output}: written twice by this command (also as {seen[resolved]})")
        seen[resolved] = output
        _check_writable(output)


# --- 2. publish an artifact and its sidecars together -------------------------------------------------------------
def _create_temporary(target: Path) -> Path:
    """An empty new file beside `target`, made with the umask's mode (tempfile.mkstemp would force 0600)."""
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def _directory_locks(directories: Iterable[Path]) -> Iterator[None]:
    """Exclusive flock on each directory (in a fixed order, so two publishers cannot deadlock). A lock on the
    directory itself leaves no lock file behind."""
    with contextlib.ExitStack() as stack:
        for directory in sorted(set(directories)):
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            stack.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def atomic_outputs(*paths: PathLike) -> Iterator[list[Path]]:
    """Yield one temporary path per target (same directory, so the rename is atomic); if the block succeeds,
    rename them all onto their targets together. Whatever happens, no temporary is left behind."""
    targets = [Path(p) for p in paths]
    temporaries: list[Path] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            with held():  # created and recorded for the cleanup below as one step
                temporaries.append(_create_temporary(target))
        yield list(temporaries)
        with held(), _directory_locks(t.parent.resolve() for t in targets):
            for tmp, target in zip(temporaries, targets):
                try:
                    os.replace(tmp, target)
                except OSError as exc:  # a directory made at the target since check_outputs
                    if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                        raise
                    raise BertrtError(f"{target}: output is a directory (give a file name)") from None
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """`atomic_outputs` for a single file."""
    with atomic_outputs(path) as (tmp,):
        yield tmp


def write_json(path: PathLike, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def write_json_atomic(path: PathLike, data: Any) -> None:
    with atomic_output(path) as tmp:
        write_json(tmp, data)


# --- 3. sidecars --------------------------------------------------------------------------------------------------
def sidecar_record(artifact: PathLike, content: PathLike, stage: str, parameters: dict[str, Any],
                   inputs: dict[str, PathLike]) -> dict[str, Any]:
    """The sidecar of `artifact` whose bytes are (still) at `content`: the stage, its parameters, the hashes of
    the artifact and of its input files, and the tool versions."""
    return {
        "stage": stage,
        "artifact": Path(artifact).name,
        "sha256": sha256_file(content),
        "parameters": parameters,
        "inputs": {name: {"path": str(p), "sha256": sha256_file(p)} for name, p in inputs.items()},
        "tools": tool_versions(),
    }


def write_sidecar(artifact: PathLike, stage: str, parameters: dict[str, Any],
                  inputs: dict[str, PathLike]) -> dict[str, Any]:
    """The sidecar of an artifact already in place (stages that publish the artifact and its sidecar together
    use `atomic_outputs` with `sidecar_record` instead)."""
    record = sidecar_record(artifact, artifact, stage, parameters, inputs)
    write_json_atomic(sidecar_path(artifact), record)
    return record
