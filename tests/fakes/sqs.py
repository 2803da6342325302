"""moto's SQS server: the real SQS wire protocol over HTTP, its state in the process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def start_moto(port: int) -> subprocess.Popen[bytes]:
    """moto's SQS server on 127.0.0.1:`port` (its state lives in the process)."""
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    command = [executable] if executable else [sys.executable, "-m", "moto.server"]
    return subprocess.Popen(
        [*command, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
