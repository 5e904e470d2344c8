"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests and experiments (initdb / pg_ctl in a temp folder).

initdb refuses to run as root, so as root the server runs as the `postgres` user (`runuser`). Install
the server with `apt-get install -y postgresql` (the Makefile's `system-deps` does).

Example:
    >>> with throwaway_cluster() as url:  # doctest: +SKIP
    ...     init_study(url, "demo", space, workload="digits-mlp")
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pg_bin_dir() -> Path | None:
    """The newest `/usr/lib/postgresql/*/bin` holding initdb and pg_ctl, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def throwaway_cluster(db: str = "lepton", *, max_connections: int = 100) -> Iterator[str]:
    """Start a fresh cluster, create `db`, yield its `postgresql+psycopg2://` URL; stop and delete on exit."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server not found under /usr/lib/postgresql: apt-get install -y postgresql")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="lepton_pg_"))
    data, port = root / "data", free_port()
    if as_pg:
        shutil.chown(root, user="postgres", group="postgres")

    def run(*args: str) -> None:
        proc = subprocess.run([*as_pg, *args], check=False, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")

    started = False
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        # fsync off: a test cluster need not survive a power cut, and it makes commits cheap.
        opts = f"-k {root} -h 127.0.0.1 -p {port} -c fsync=off -c max_connections={max_connections}"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "server.log"), "-w", "-t", "60", "start")
        started = True
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", db)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{db}"
    finally:
        if started:
            subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           check=False, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
