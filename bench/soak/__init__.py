"""The chaos soak: N questions through the real service while its processes are killed and its
services restarted, then the invariants a user and an operator rely on, checked.

    python -m bench.soak --short               # 1,000 jobs, 3-4 minutes: test_soak.py
    python -m bench.soak --jobs 10000 --record  # make soak: appends to bench/RESULTS.md

It owns everything it disturbs: a private PostgreSQL cluster (initdb in a temp dir), a private
redis-server, fauxqs behind a TCP proxy it can cut, the fake OpenAI-wire server (in process),
gunicorn, the events process (uvicorn) and two worker supervisors, all on 127.0.0.1 ports of
its own. Nothing of the system PostgreSQL or Redis is touched.
"""
