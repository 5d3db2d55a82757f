"""Small files other processes read: written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile


def write_json_atomic(path: str | os.PathLike[str], data: object) -> None:
    """Write JSON to a temp file beside `path` and rename it over `path`.

    A reader sees the old file or the new one, never half of one.  No fsync: these files
    describe the present; after a power cut the queue, not a snapshot, is the truth.
    """
    directory = os.path.dirname(os.fspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_json(path: str | os.PathLike[str]) -> object | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
