"""A worker-like process for tests/integration/test_ratelimit.py: acquire the shared LLM rate
limit `count` times and append the wall-clock time of each go to a file, one line each.

    python -m tests.integration.ratelimit_child MODEL COUNT TOKENS OUTFILE
"""

from __future__ import annotations

import asyncio
import sys
import time


async def main(model: str, count: int, tokens: int, out: str) -> None:
    from questions.llm.ratelimit import acquire

    with open(out, "a", buffering=1) as log:  # line-buffered: the test reads it while we run
        for _ in range(count):
            await acquire(model, tokens)
            log.write(f"{time.time():.6f}\n")


if __name__ == "__main__":
    import django

    django.setup()
    model, count, tokens, out = sys.argv[1:5]
    asyncio.run(main(model, int(count), int(tokens), out))
