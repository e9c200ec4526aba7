"""The service secret: keys API-key hashes and signs account tokens and admin sessions.

CREDITMETER_SECRET_KEY when set (production: one value shared by every process). Otherwise
a random secret is created once in the data directory, so a local `creditmeter up` keeps
its keys and tokens valid across restarts without configuration.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from sync.settings import Settings

SECRET_FILE_NAME = "secret_key"
SECRET_BYTES = 32  # 256 bits, the HMAC-SHA256 key size
SECRET_READ_ATTEMPTS = 100  # x 10 ms: a concurrent creator writes 64 bytes well within 1 s


def secret_key(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode()
    return _file_secret(Path(settings.data_dir) / SECRET_FILE_NAME)


def _file_secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        # Write then rename would leave a window with no file; O_EXCL makes one writer win.
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(SECRET_BYTES))
    for _ in range(SECRET_READ_ATTEMPTS):
        text = path.read_text().strip()
        if text:
            return text.encode()
        # Another process won O_EXCL and has not written yet.
        time.sleep(0.01)
    raise RuntimeError(f"secret file {path} stays empty")
