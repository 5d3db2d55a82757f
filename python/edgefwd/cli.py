"""The `edgefwd` command line (see docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time

DEFAULT_CONFIG = "/etc/edgefwd/edgefwd.yaml"
EX_USAGE = 64


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("edgefwd")
    except Exception:  # running from a source tree without metadata
        from edgefwd import _core

        return _core.__version__


def _load(path: str, read_secrets: bool = True):
    from edgefwd.config import load_config
    from edgefwd.errors import EX_CONFIG, ConfigError

    try:
        return load_config(path, read_secrets=read_secrets), 0
    except ConfigError as exc:
        print(f"edgefwd: config error: {exc}", file=sys.stderr)
        return None, EX_CONFIG


def cmd_run(args) -> int:
    config, rc = _load(args.config)
    if config is None:
        return rc
    from edgefwd.agent import run

    return run(config)


def cmd_status(args) -> int:
    from edgefwd.status import build_status, exit_code, render_text

    # status needs no secrets: a technician without access to them can still read it
    config, rc = _load(args.config, read_secrets=False)
    if config is None:
        doc = {"version": 1, "health": "unknown", "problems": ["config cannot be read"]}
        if args.json:
            print(json.dumps(doc))
        return 3
    while True:
        try:
            doc = build_status(config)
        except Exception as exc:  # any failure to read state is "unknown", never a traceback
            doc = {"version": 1, "health": "unknown", "gateway_id": config.gateway_id, "problems": [f"cannot read state: {exc}"]}
        if args.json:
            print(json.dumps(doc), flush=True)
        else:
            if args.watch:
                print("\033[2J\033[H", end="")
            print(render_text(doc) if "agent" in doc else f"health: UNKNOWN\n  ! {doc['problems'][0]}", flush=True)
        if not args.watch:
            return exit_code(doc)
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return exit_code(doc)


def cmd_check(args) -> int:
    config, rc = _load(args.config)
    if config is None:
        return rc
    from edgefwd.check import check_connections

    print(f"config {args.config}: ok (gateway_id={config.gateway_id}, {len(config.routes)} routes)")
    return check_connections(config, timeout=args.timeout)


def _open_queue(args):
    """The queue, read-only, for inspection beside a running agent (no secrets needed)."""
    config, rc = _load(args.config, read_secrets=False)
    if config is None:
        return None, rc
    from edgefwd.queue import Queue

    return Queue(config.data_dir, config.queue.max_bytes, readonly=True), 0


def cmd_queue(args) -> int:
    from edgefwd import _core

    queue, rc = _open_queue(args)
    if queue is None:
        return rc
    try:
        if args.queue_cmd == "stats":
            stats = queue.stats()
            print(json.dumps({"epoch": queue.epoch, "next_seq": queue.next_seq(), **stats}, indent=2))
        elif args.queue_cmd == "peek":
            shown = 0
            for batch in queue.read_batches(0, max(1, args.limit)):
                try:
                    _, records = _core.decode_batch(batch.data)
                except _core.CorruptBatchError as exc:  # the drainer will quarantine it
                    print(json.dumps({"batch": batch.id, "priority": batch.priority, "corrupt": str(exc)}))
                    continue
                for rec in records:
                    seq, wall_ms, _, _, qos, retain, route, topic, key, mqtt_topic, payload, _ = rec
                    print(
                        json.dumps(
                            {
                                "batch": batch.id,
                                "priority": batch.priority,
                                "seq": seq,
                                "received_ms": wall_ms,
                                "mqtt_topic": mqtt_topic,
                                "kafka_topic": topic,
                                "key": key.decode("utf-8", "replace") if key is not None else None,
                                "bytes": len(payload),
                            }
                        )
                    )
                    shown += 1
                    if shown >= args.limit:
                        return 0
    finally:
        queue.close()
    return 0


def cmd_dlq(args) -> int:
    queue, rc = _open_queue(args)
    if queue is None:
        return rc
    try:
        for letter_id, meta, data in queue.dead_letters(args.limit):
            print(json.dumps({"id": letter_id, **meta, "bytes": len(data)}))
    finally:
        queue.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefwd", description="Store-and-forward from MQTT to Kafka.")
    parser.add_argument("--version", action="version", version=f"edgefwd {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
        return p

    p = with_config(sub.add_parser("run", help="run the agent in the foreground"))
    p.set_defaults(func=cmd_run)
    p = with_config(sub.add_parser("status", help="health, connections, backlog, counters"))
    p.add_argument("--json", action="store_true", help="the status document as JSON (version 1)")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes with --watch")
    p.set_defaults(func=cmd_status)
    p = with_config(sub.add_parser("check", help="validate the config and try both connections"))
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=cmd_check)
    p = with_config(sub.add_parser("queue", help="inspect the backlog"))
    p.add_argument("queue_cmd", choices=["stats", "peek"])
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_queue)
    p = with_config(sub.add_parser("dlq", help="list dead letters"))
    p.add_argument("dlq_cmd", choices=["list"])
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_dlq)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from edgefwd.errors import EdgefwdError

        if isinstance(exc, EdgefwdError):
            print(f"edgefwd: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
