"""The soak's own services and processes: each in a process group of its own (so a signal to
the group reaches it all, and cleanup can leave nothing behind), its output in a log file."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def children_of(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def ports_connected_to(pid: int, port: int) -> list[int]:
    """The local ports of a process's TCP connections to 127.0.0.1:`port` (from /proc: its
    socket inodes matched against /proc/net/tcp)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    ports = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.split(":")[1], 16) == port:
                ports.append(int(local.split(":")[1], 16))
    return ports


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Managed:
    """A long-running child in its own session (process group); restartable."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.logdir = logdir
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._group_swept = False

    def start(self) -> Managed:
        self.starts += 1
        self._group_swept = False
        log = (self.logdir / f"{self.name}.log").open("ab")
        log.write(f"--- start {self.starts} at {time.time():.3f}\n".encode())
        log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()  # the child has its own copy
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_group(self, signum: int) -> None:
        if self.popen is not None and not self._group_swept:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signum)

    def stop(self, *, timeout: float, signum: int = signal.SIGTERM) -> int | None:
        """Signal the whole group, wait up to `timeout`, then SIGKILL the group. Returns the
        exit code, or None if it had to be killed."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.signal_group(signum)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self._group_swept = True
                self.popen.wait(timeout=10)
                return None
        # Whatever of the group outlived its leader, once, right away: later the id may be
        # another process's.
        self.signal_group(signal.SIGKILL)
        self._group_swept = True
        return self.popen.returncode

    def log_text(self) -> str:
        path = self.logdir / f"{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} not found: apt-get install postgresql")
    return path


class PrivatePostgres:
    """A throwaway PostgreSQL cluster: initdb into `root`, on a free port, trust auth on
    loopback. initdb refuses root, so as root it runs as the `postgres` user."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.log = root / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, user="postgres")
        root.chmod(0o755)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        subprocess.run(
            [*self._as, *argv], check=True, timeout=timeout, stdout=subprocess.DEVNULL, cwd="/"
        )

    def start(self) -> PrivatePostgres:
        self._run(
            _pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        self._pg_ctl("start")
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "60", action, *extra,
        )  # fmt: skip

    def restart(self) -> None:
        """pg_ctl restart -m fast: every session is cut, then it accepts again."""
        self._pg_ctl("restart", "-m", "fast")

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")


# --------------------------------------------------------------------------- Redis, fauxqs


def redis_server(logdir: Path, port: int, env: dict[str, str]) -> Managed:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server not found: apt-get install redis-server")
    argv = [
        server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--daemonize", "no", "--protected-mode", "no",
    ]  # fmt: skip
    return Managed("redis", argv, env, logdir)


def fauxqs(logdir: Path, port: int, env: dict[str, str]) -> Managed:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is needed for fauxqs: apt-get install nodejs npm")
    if not (ROOT / "bench" / "node_modules" / "fauxqs").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=ROOT / "bench",
            check=True,
            timeout=300,
        )
    argv = [node, str(ROOT / "bench" / "fauxqs_server.mjs"), "--port", str(port)]
    return Managed("fauxqs", argv, env, logdir)
