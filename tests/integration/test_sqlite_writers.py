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


# questions_succeed on SQLite: the answers one at a time, in the one transaction.
SUCCEED_SCRIPT = """
import uuid
import django
django.setup()
from django.contrib.auth.models import User
from django.core.management import call_command
from questions.llm.client import Completion
from questions.models import LLMCall, Question
from questions.services import PaidAnswer, questions_succeed

call_command("migrate", verbosity=0)
owner = User.objects.create(username="asker")
kept = Question.objects.create(owner=owner, text="Kept?", status="running", attempts=1)
lost = Question.objects.create(owner=owner, text="Lost?", status="running", attempts=2)
lost.attempts = 1  # the claim this worker held, taken since by attempt 2
paid = Completion(text="Yes.", model="gpt-4o-mini", prompt_tokens=10, completion_tokens=2)
call_id = uuid.uuid4()
items = [PaidAnswer(question=kept, completion=paid, call_id=call_id),
         PaidAnswer(question=lost, completion=paid, call_id=uuid.uuid4())]
print("stored", questions_succeed(items=items))
print("again", questions_succeed(items=items[:1]))
rows = {q.text: q for q in Question.objects.all()}
print("kept", rows["Kept?"].status, rows["Kept?"].answer, rows["Kept?"].cost == kept.cost > 0)
print("lost", rows["Lost?"].status, rows["Lost?"].answer == "", rows["Lost?"].cost == kept.cost)
print("ledger", LLMCall.objects.count())
"""


def test_answers_are_stored_one_at_a_time_in_one_transaction_on_sqlite(tmp_path: Path) -> None:
    env = child_env(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )
    result = subprocess.run(
        [sys.executable, "-c", SUCCEED_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if "WARNING" not in line]  # logs
    assert printed == [
        "stored [True, False]",
        "again [False]",
        "kept succeeded Yes. True",
        "lost running True True",
        "ledger 2",
    ], result.stdout
