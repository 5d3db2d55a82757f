"""The processes a benchmark starts besides the agent: each runs alone in its own interpreter,
so none of them shares a GIL with what is measured (or with the benchmark's own poller).

    python bench/roles.py publish  '<json args>'   publish N QoS 1 messages, report timing
    python bench/roles.py bare     '<json args>'   bare paho subscriber, manual ack at once
    python bench/roles.py diy      '<json args>'   paho -> confluent-kafka bridge, no disk queue
    python bench/roles.py inproc   '<json args>'   edgefwd Queue + Ingest (+ Drainer thread)

Every role prints one JSON object per line on stdout: {"event": "ready", ...} once it is
connected, and {"event": "done", ...} with its timings (time.time() wall clock, so the parent
can line them up with its own observations) when it has finished its N messages.
Run by bench/common.py; not meant to be called by hand (but it works).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import device_topics, make_payloads  # noqa: E402


def emit(**doc) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def self_io() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/self/io") as f:
            for line in f:
                k, v = line.split(":")
                out[k] = int(v)
    except OSError:
        pass
    return out


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_client(a: dict, manual_ack: bool) -> tuple[mqtt.Client, dict]:
    """A subscriber on the persistent session the benchmark primed (see common.prime_session)."""
    v5 = a["protocol"] == "5"
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=a["client_id"],
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
        manual_ack=manual_ack,
    )
    kwargs: dict = {}
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 86400
        kwargs = {"clean_start": False, "properties": props}
    return c, kwargs


def on_connect_subscribe(a: dict, ready: threading.Event):
    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            emit(event="error", error=f"connect refused: {reason_code}")
            return
        if not flags.session_present:  # the benchmark primes it; subscribe if it was lost
            opts = SubscribeOptions(qos=1, retainHandling=1) if a["protocol"] == "5" else 1
            client.subscribe([(a["filter"], opts)])
        ready.set()

    return on_connect


# --------------------------------------------------------------------------- publisher


def role_publish(a: dict) -> None:
    """Publish N QoS 1 messages round-robin over the device topics, as fast as paho goes,
    with up to `max_inflight` unacknowledged; wait for every PUBACK."""
    n = a["n"]
    topics = device_topics(a["devices"])
    payloads = make_payloads(a["size"], 256)
    v5 = a["protocol"] == "5"
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=a["client_id"],
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else True,
    )
    c.max_inflight_messages_set(a.get("max_inflight", 1000))
    c.max_queued_messages_set(0)
    acked = [0]
    done = threading.Event()
    connected = threading.Event()

    def on_publish(client, userdata, mid, reason_code, properties) -> None:
        acked[0] += 1
        if acked[0] >= n:
            done.set()

    c.on_publish = on_publish
    c.on_connect = lambda *args: connected.set()
    # No network thread: publish() then writes each packet straight to the socket, and this
    # thread reads PUBACKs with loop(0) every few messages. paho's loop_start() would wake
    # its thread through a socket pair per publish, which halves the publishing rate.
    c.connect(a["host"], a["port"], keepalive=60)
    deadline = time.monotonic() + 10
    while not connected.is_set():
        c.loop(0.05)
        if time.monotonic() > deadline:
            emit(event="error", error="publisher could not connect")
            sys.exit(1)
    emit(event="ready")
    t0 = time.time()
    publish = c.publish
    loop = c.loop
    nd = len(topics)
    npl = len(payloads)
    for i in range(n):
        publish(topics[i % nd], payloads[i % npl], qos=1)
        if i % 64 == 63:
            loop(0)
    t_sent = time.time()
    deadline = time.monotonic() + a.get("timeout", 300)
    while not done.is_set():
        loop(0.01)
        if time.monotonic() > deadline:
            emit(event="error", error=f"only {acked[0]} of {n} PUBACKs")
            sys.exit(1)
    t1 = time.time()
    c.disconnect()
    emit(event="done", n=n, t_start=t0, t_sent=t_sent, t_end=t1, rate=n / (t1 - t0), maxrss_mb=maxrss_mb())


# --------------------------------------------------------------------------- bare paho


def role_bare(a: dict) -> None:
    """Receive N messages and ack each one right away: paho's ceiling, nothing else."""
    n = a["n"]
    c, kwargs = make_client(a, manual_ack=True)
    ready, done = threading.Event(), threading.Event()
    st = {"count": 0, "t_first": None, "t_last": None}

    def on_message(client, userdata, msg) -> None:
        client.ack(msg.mid, msg.qos)
        st["count"] += 1
        if st["t_first"] is None:
            st["t_first"] = time.time()
        if st["count"] >= n:
            st["t_last"] = time.time()
            done.set()

    c.on_connect = on_connect_subscribe(a, ready)
    c.on_message = on_message
    c.connect(a["host"], a["port"], keepalive=60, **kwargs)
    c.loop_start()
    if not ready.wait(10):
        emit(event="error", error="could not connect")
        sys.exit(1)
    emit(event="ready")
    if not done.wait(a.get("timeout", 300)):
        emit(event="error", error=f"only {st['count']} of {n} messages")
        sys.exit(1)
    c.disconnect()
    c.loop_stop()
    emit(event="done", n=n, t_first=st["t_first"], t_last=st["t_last"], io=self_io(), maxrss_mb=maxrss_mb())


# --------------------------------------------------------------------------- DIY bridge


def role_diy(a: dict) -> None:
    """The do-it-yourself bridge: paho auto-ack QoS 1 (PUBACK as on_message returns) and a
    confluent-kafka produce() per message from on_message. No disk: whatever librdkafka holds
    in memory is lost in a crash. Done when N delivery reports came back."""
    from confluent_kafka import Producer

    n = a["n"]
    c, kwargs = make_client(a, manual_ack=False)
    producer = Producer(a["producer"])
    ready, done = threading.Event(), threading.Event()
    st = {"count": 0, "delivered": 0, "errors": 0, "t_first": None, "t_last": None}
    topic = a["kafka_topic"]

    def on_delivery(err, msg) -> None:
        if err is not None:
            st["errors"] += 1
            return
        st["delivered"] += 1
        if st["delivered"] >= n:
            st["t_last"] = time.time()
            done.set()

    def on_message(client, userdata, msg) -> None:
        if st["t_first"] is None:
            st["t_first"] = time.time()
        st["count"] += 1
        key = msg.topic.split("/")[1]
        while True:
            try:
                producer.produce(topic, msg.payload, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)

    c.on_connect = on_connect_subscribe(a, ready)
    c.on_message = on_message
    c.connect(a["host"], a["port"], keepalive=60, **kwargs)
    c.loop_start()
    if not ready.wait(10):
        emit(event="error", error="could not connect")
        sys.exit(1)
    emit(event="ready")
    deadline = time.monotonic() + a.get("timeout", 300)
    while not done.is_set() and time.monotonic() < deadline:
        producer.poll(0.05)
    if not done.is_set():
        emit(event="error", error=f"only {st['delivered']} of {n} delivered ({st['errors']} errors)")
        sys.exit(1)
    c.disconnect()
    c.loop_stop()
    producer.flush(10)
    emit(
        event="done", n=n, t_first=st["t_first"], t_last=st["t_last"], errors=st["errors"],
        io=self_io(), maxrss_mb=maxrss_mb(),
    )


# --------------------------------------------------------------------------- in-process


def role_inproc(a: dict) -> None:
    """edgefwd's own Queue and Ingest in this one process, and (drainer="thread") its Drainer
    on a thread beside them: the layout the agent does NOT use, measured against it.
    The parent watches the queue's counters; SIGTERM stops everything cleanly."""
    from edgefwd.agent import setup_logging
    from edgefwd.config import load_config
    from edgefwd.drainer import Drainer
    from edgefwd.ingest import Ingest
    from edgefwd.queue import Queue

    config = load_config(a["config"])
    setup_logging("warning", role="inproc")
    queue = Queue(config.data_dir, config.queue.max_bytes)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    drainer = thread = None
    if a["drainer"] == "thread":
        drainer = Drainer(config, queue)
        thread = threading.Thread(target=drainer.run, name="edgefwd-drainer", daemon=True)
        thread.start()
    ingest = Ingest(config, queue)
    ingest.start()
    deadline = time.monotonic() + 10
    while not ingest.state.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    emit(event="ready", pid=os.getpid())
    stop.wait()
    ingest.stop()
    if drainer is not None:
        drainer.stop()
        thread.join(20)
    queue.close()
    emit(event="done", io=self_io(), maxrss_mb=maxrss_mb())


ROLES = {"publish": role_publish, "bare": role_bare, "diy": role_diy, "inproc": role_inproc}

if __name__ == "__main__":
    ROLES[sys.argv[1]](json.loads(sys.argv[2]))
