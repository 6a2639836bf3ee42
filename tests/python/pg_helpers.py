"""A throwaway PostgreSQL server for the fleet tests: initdb + pg_ctl in a fresh
directory under /tmp on a free loopback port (trust authentication, fsync off),
stopped in immediate mode and removed by stop(). initdb refuses to run as root,
so as root the server runs as Debian's `postgres` system user (runuser). The
binaries come from $AUTOQUANT_PG_BINDIR, else the newest /usr/lib/postgresql/N/bin
(scripts/setup.sh installs Debian's postgresql)."""
import itertools
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from daemon_helpers import free_port


def _bindir() -> pathlib.Path:
    env = os.environ.get("AUTOQUANT_PG_BINDIR")
    if env:
        return pathlib.Path(env)
    versions = sorted((p for p in pathlib.Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)
    if not versions:
        raise AssertionError("no PostgreSQL server binaries (initdb, pg_ctl): run scripts/setup.sh "
                             "(installs Debian's postgresql) or set AUTOQUANT_PG_BINDIR")
    return versions[-1]


class Postgres:
    _names = itertools.count()

    def __init__(self):
        self.bindir = _bindir()
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="aq-pg-"))
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.running = False

    def _run(self, *args, log):
        with open(self.dir / log, "w") as out:
            proc = subprocess.run([*self.as_user, *map(str, args)], stdout=out, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise AssertionError(f"{args[0]} failed ({proc.returncode}): {(self.dir / log).read_text()}"
                                 f"{self.server_log()}")

    def server_log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text() if path.exists() else ""

    def start(self):
        if self.as_user:
            shutil.chown(self.dir, user="postgres")
        self._run(self.bindir / "initdb", "-D", self.dir / "data", "-A", "trust", "-U", "autoquant", "--no-sync",
                  "-E", "UTF8", log="initdb.log")
        self._run(self.bindir / "pg_ctl", "-D", self.dir / "data", "-l", self.dir / "server.log", "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                        f"-c max_connections=200", "start", log="pg_ctl.log")
        self.running = True
        return self

    def stop(self):
        if self.running:
            subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m",
                            "immediate", "-w", "stop"], capture_output=True)
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str) -> str:
        return f"postgresql://autoquant@127.0.0.1:{self.port}/{db}"

    def new_database(self, tablespace: str = "") -> str:
        """A fresh database's URL; with `tablespace`, all its tables and indexes live there."""
        name = f"fleet_{os.getpid()}_{next(self._names)}"
        self.sql(self.url("postgres"), f"CREATE DATABASE {name}" + (f" TABLESPACE {tablespace}" if tablespace else ""))
        return self.url(name)

    def new_tablespace(self, name: str, directory: pathlib.Path):
        """Tablespace `name` in `directory` (an empty directory the server's user is given)."""
        directory.mkdir(exist_ok=True)
        if self.as_user:
            shutil.chown(directory, user="postgres")
        self.sql(self.url("postgres"), f"CREATE TABLESPACE {name} LOCATION '{directory}'")

    def sql(self, url: str, query: str):
        """Rows of `query` as lists of strings (psql, unaligned, tab-separated)."""
        proc = subprocess.run([str(self.bindir / "psql"), url, "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", "-c",
                               query], capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError(f"psql {query!r}: {proc.stderr}")
        return [line.split("\t") for line in proc.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server for the module's tests."""
    server = Postgres().start()
    try:
        yield server
    finally:
        server.stop()
