"""`make run` on SQLite: the web app and the worker write to one file at once. Two transactions
that both read and then write must take turns, not fail with "database is locked" (the API
answered 500 when a question was asked while the worker stored an answer)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, child_env

# Two threads, each in a transaction: read, wait for the other to have read too (or 2 s), write.
# SQLite's default (deferred) transactions then deadlock on the write lock, and one of them fails
# at once, whatever the busy timeout; transactions that take the write lock as they begin wait.
SCRIPT = """
import threading
import django
django.setup()
from django.db import connection, transaction

with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS t (n integer)")
connection.close()
both_read = threading.Barrier(2, timeout=2)
errors = []

def writer(n):
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM t")
                try:
                    both_read.wait()
                except threading.BrokenBarrierError:
                    pass
                cursor.execute("INSERT INTO t VALUES (%s)", [n])
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connection.close()

threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM t")
    print("rows", cursor.fetchone()[0], "errors", errors)
"""


def test_two_writers_take_turns(tmp_path: Path) -> None:
    env = child_env(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "rows 2 errors []", result.stdout
