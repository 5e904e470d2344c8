"""Keep file outputs inside their folder.

A relative output path must stay inside the folder it is relative to (the current folder by default):
`../x` or `a/../../x` is refused. An absolute path is an explicit choice and is taken as given. Names
that become file or folder names (study names, trial files) may not contain separators at all.
`field` is the caller's parameter name (`study_name`, `out_dir`): errors name it, and the command line
renames it to its flag.

Example:
    >>> confined_dir("out_dir", "exports/best", root="/tmp").as_posix()
    '/tmp/exports/best'
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lepton_search.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def safe_name(field: str, name: str) -> str:
    """A name that is safe as one path component: letters, digits, '_', '-', '.'; no '..' or separators."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ConfigError(field, name, "use letters, digits, '_', '-', '.' only (no path separators or '..')")
    return name


def confined_dir(field: str, path: str | Path, *, root: str | Path | None = None) -> Path:
    """`path` resolved; a relative one must stay under `root` (default: the current folder)."""
    raw = Path(path)
    if str(path).strip() == "":
        raise ConfigError(field, str(path), "give a folder name")
    if raw.is_absolute():
        return raw
    base = Path(root).resolve() if root is not None else Path.cwd().resolve()
    resolved = (base / raw).resolve()
    if resolved != base and base not in resolved.parents:
        raise ConfigError(field, str(path), f"leaves {base}; give a folder inside it, or an absolute path "
                          "to write elsewhere on purpose")
    return resolved


def confined_file(field: str, folder: str | Path, name: str) -> Path:
    """`folder / name` where `name` must not climb out of `folder`."""
    folder = Path(folder).resolve()
    target = (folder / name).resolve()
    if folder not in target.parents:
        raise ConfigError(field, name, f"must stay inside {folder}; use a plain file name")
    return target


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive `flock` on `path` (created if missing) for the duration of the block."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (a released ONNX file, shipped weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class AtomicFolder:
    """Files by relative id in one folder, written atomically (temporary file + rename: a reader sees the old file
    or the whole new one), sub-folders made as needed; the shape of Optuna's artifact-store protocol
    (`open_reader`, `write`, `remove`) plus `entries` and `touch` for size caps.

    Example:
        >>> import io, tempfile
        >>> folder = AtomicFolder(tempfile.mkdtemp())
        >>> folder.write("a/b.bin", io.BytesIO(b"xy")); [(i, n) for i, n, _ in folder.entries("a/")]
        [('a/b.bin', 2)]
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, artifact_id: str) -> Path:
        """The file of `artifact_id`; ValueError for an id that would leave the folder."""
        path = self.folder / artifact_id
        root = os.path.abspath(self.folder)
        if os.path.isabs(artifact_id) or os.path.commonpath([root, os.path.abspath(path)]) != root:
            raise ValueError(f"Invalid artifact_id: {artifact_id}")
        return path

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return open(self.path(artifact_id), "rb")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        path = self.path(artifact_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as fh:
                shutil.copyfileobj(content_body, fh)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self, artifact_id: str) -> None:
        self.path(artifact_id).unlink()

    def entries(self, prefix: str) -> list[tuple[str, int, float]]:
        """(id, bytes, last used) of every file whose id starts with `prefix` (temporary files left out)."""
        out = []
        for path in self.folder.glob(f"{prefix}**/*"):
            if path.is_file() and not path.name.startswith("."):
                with contextlib.suppress(OSError):  # another process removed it meanwhile
                    st = path.stat()
                    out.append((path.relative_to(self.folder).as_posix(), st.st_size, st.st_mtime))
        return out

    def touch(self, artifact_id: str) -> None:
        """Mark `artifact_id` recently used (evicted last)."""
        with contextlib.suppress(OSError):
            os.utime(self.path(artifact_id))
