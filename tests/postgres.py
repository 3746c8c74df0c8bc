"""
A throw-away PostgreSQL server for tests: Debian's ``postgresql`` package (``initdb`` and ``pg_ctl`` from
``/usr/lib/postgresql/<version>/bin``, or on ``PATH``), a cluster in a temporary directory, listening on 127.0.0.1 only,
on a free port, with trust authentication for loopback connections; stopped and deleted at the end. As root, the
server runs as the ``postgres`` user (PostgreSQL refuses to run as root).

Without the server binaries or the driver the tests that need them skip, saying how to get them; with
``SB3_TWM_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) they fail instead.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRE_VARIABLE = "SB3_TWM_REQUIRE_POSTGRES"
INSTALL_HINT = (
    "install Debian's PostgreSQL server (apt-get install -y postgresql) and the driver "
    '(pip install -e ".[test]" or ".[postgres]")'
)


def _unavailable(reason: str) -> None:
    message = f"{reason}: {INSTALL_HINT}"
    if os.environ.get(REQUIRE_VARIABLE, "").strip() not in ("", "0"):
        pytest.fail(f"{message} ({REQUIRE_VARIABLE} is set: the PostgreSQL tests must run)")
    pytest.skip(message)


def server_binaries() -> Path | None:
    """:return: The folder of ``initdb`` and ``pg_ctl`` (the newest Debian version first), or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name), reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if all((Path(folder) / name).is_file() for name in ("initdb", "pg_ctl")):
            return Path(folder)
    return None


def free_port() -> int:
    """:return: A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """
    Start a PostgreSQL server for the block.

    :return: Its SQLAlchemy URL, ``postgresql+psycopg2://postgres@127.0.0.1:<port>/postgres``.
    """
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("the PostgreSQL driver psycopg2 is not installed")
    binaries = server_binaries()
    if binaries is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) found")

    run_as: dict[str, int] = {}
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root, and there is no 'postgres' user to run the server as")
        run_as = {"user": account.pw_uid, "group": account.pw_gid}
    # Not under pytest's tmp_path: its root-only parent folders are closed to the postgres user.
    root = Path(tempfile.mkdtemp(prefix="sb3-twm-postgres-"))
    data, log = root / "data", root / "server.log"
    if run_as:
        os.chown(root, run_as["user"], run_as["group"])

    def server_command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(binaries / args[0]), *args[1:]], capture_output=True, text=True, timeout=120, cwd=root, **run_as
        )

    started = False
    try:
        result = server_command("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        assert result.returncode == 0, f"initdb failed:\n{result.stdout}\n{result.stderr}"
        for _attempt in range(5):  # another process may take the free port between the probe and the start
            port = free_port()
            options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=50"
            result = server_command("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
            if result.returncode == 0:
                started = True
                break
        assert started, f"pg_ctl start failed:\n{result.stdout}\n{result.stderr}\n{log.read_text() if log.exists() else ''}"
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            server_command("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
