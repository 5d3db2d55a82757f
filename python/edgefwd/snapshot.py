"""Small files other processes read: written whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile


SNAPSHOT_BYTES = 8192  # status snapshots are padded to this size (JSON allows trailing blanks)


def write_snapshot(path: str | os.PathLike[str], data: object) -> None:
    """Write a status snapshot whole, so that readers see the old one or the new one.

    Normally a temp file renamed over `path`. On a full disk (ENOSPC) that needs space there
    is none of, so the snapshot is padded to SNAPSHOT_BYTES and, when the disk is full,
    written over the existing file in place instead: same size, blocks already allocated,
    so it still works and `edgefwd status` can say why the agent stopped acknowledging.
    (In place, a reader may catch it half-written; status.py reads again then.)
    """
    text = json.dumps(data, separators=(",", ":"))
    body = text.encode().ljust(SNAPSHOT_BYTES)
    directory = os.path.dirname(os.fspath(path)) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError:
            raise exc from None
        try:
            size = os.fstat(fd).st_size
            if len(body) > size:
                raise exc
            os.pwrite(fd, body.ljust(size), 0)
        finally:
            os.close(fd)



def read_json(path: str | os.PathLike[str]) -> object | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
