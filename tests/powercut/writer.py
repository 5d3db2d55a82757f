"""A tiny standalone queue writer for the power-cut controls (not the agent).

    python writer.py DATA_DIR --sync 1|0

It appends batches of 50 records with ``edgefwd.queue.Queue.commit_ingest`` and, after each
commit returns, "acks" them by printing ``ACK <first> <last>`` (flushed) on stdout.  With
``--sync 0`` the LMDB environment is opened with ``sync=False`` (MDB_NOSYNC: no fdatasync,
meta page written without O_DSYNC) - the unsafe configuration the simulation must catch.
With ``--sync 1`` it is edgefwd's own configuration (the positive control).
"""

import argparse
import os
import sys
import time

import lmdb

ap = argparse.ArgumentParser()
ap.add_argument("data_dir")
ap.add_argument("--sync", type=int, choices=(0, 1), required=True)
ap.add_argument("--max-bytes", type=int, default=64 << 20)
args = ap.parse_args()

_open = lmdb.open


def patched_open(*a, **kw):
    if not args.sync:
        kw.update(sync=False, metasync=False)
    return _open(*a, **kw)


lmdb.open = patched_open

from edgefwd import _core  # noqa: E402
from edgefwd.queue import NewBatch, Queue  # noqa: E402

q = Queue(args.data_dir, args.max_bytes)
boot = os.urandom(16)
seq = q.next_seq()
n = 0
out = sys.stdout
out.write("READY\n")
out.flush()
while True:
    records = [(seq + i, int(time.time() * 1000), 0, True, 1, False, 0, "t", None, "w/x", b"msg-%08d" % (n + i), [])
               for i in range(50)]
    q.commit_ingest([NewBatch(0, _core.encode_batch(records, boot, "none"), 50)], seq + 50, [], [],
                    {"messages": 50}, "block")
    out.write(f"ACK {n} {n + 49}\n")
    out.flush()
    seq += 50
    n += 50
    time.sleep(0.002)
