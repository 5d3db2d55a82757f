"""What a technician sees: `edgefwd status` in each state, config errors, secrets kept secret."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from edgefwd_dev.agent_runner import AgentRunner, make_config
from edgefwd_dev.fleet import FleetPublisher
from edgefwd_dev.services import free_port

ROUTES = [{"mqtt_filter": "vehicles/+/telemetry/#", "kafka_topic": "telemetry", "kafka_key": "${1}"}]


def edgefwd(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgefwd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_status_with_kafka_unreachable_is_degraded_and_shows_the_backlog_growing(mosquitto, tmp_workdir):
    closed = f"127.0.0.1:{free_port()}"  # nothing listens: the uplink is down
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=closed, routes=ROUTES)
    with AgentRunner(tmp_workdir, config) as agent, FleetPublisher("127.0.0.1", mosquitto.port, devices=5) as pub:
        agent.start()
        agent.wait_connected()
        pub.run(300, rate=200)
        first = agent.wait_for(lambda d: d["queue"]["messages"] > 0 and d["kafka"]["last_error"],
                               timeout=60, what="a backlog and a Kafka error")
        assert pub.wait_acked(30)
        doc = agent.wait_for(lambda d: d["queue"]["messages"] >= 300, timeout=30, what="all 300 queued")
        doc, rc = agent.status()
        assert rc == 1, doc
        assert doc["health"] == "degraded"
        assert doc["kafka"]["connected"] is False
        assert doc["mqtt"]["connected"] is True
        assert doc["queue"]["messages"] >= first["queue"]["messages"]
        assert doc["counters"]["received"] == 300 and doc["counters"]["forwarded"] == 0
        assert any("Kafka" in p for p in doc["problems"])
        text, rc_text = agent.status_text()
        assert rc_text == 1
        assert text.splitlines()[0].startswith("health: DEGRADED")
        assert "kafka: DISCONNECTED" in text
        assert agent.stop() == 0
    # stopped: critical, and the counters of the last snapshot are still shown
    doc, rc = agent.status()
    assert rc == 2 and doc["health"] == "critical"
    assert doc["queue"]["messages"] == 300
    # after a reboot the snapshots on tmpfs are gone: the counters come from the queue
    for name in ("status.json", "drainer.json"):
        (agent.runtime_dir / name).unlink()
    doc, rc = agent.status()
    assert rc == 2 and "agent not running" in doc["problems"]
    assert doc["queue"]["messages"] == 300 and doc["counters"]["received"] == 300


def test_status_unknown_when_no_state_exists(tmp_workdir):
    cfg = tmp_workdir / "edgefwd.yaml"
    cfg.write_text(textwrap.dedent(f"""
        gateway_id: gw1
        data_dir: {tmp_workdir / 'never-ran'}
        kafka: {{bootstrap_servers: "127.0.0.1:9"}}
        routes: [{{mqtt_filter: "a/#", kafka_topic: "t"}}]
    """))
    out = edgefwd("status", "--json", "--config", str(cfg))
    assert out.returncode == 3, out
    assert '"health": "unknown"' in out.stdout


@pytest.mark.parametrize(
    "body,key,line",
    [
        ('gateway_id: 0042\n', "gateway_id", 1),
        ('gateway_id: gw\nkafka: {bootstrap_servers: "x:1"}\nqueue:\n  max_bytes: 2 gigs\n', "queue.max_bytes", 4),
        ('gateway_id: gw\nkafka: {bootstrap_servers: "x:1"}\nrouts: []\n', "routs", 3),
        ('gateway_id: gw\nkafka: {bootstrap_servers: "x:1"}\nroutes:\n  - mqtt_filter: "a/+"\n    kafka_topic: "t"\n    kafka_key: "${2}"\n',
         "routes[0].kafka_key", 6),
        ('gateway_id: gw\nkafka:\n  bootstrap_servers: "x:1"\n  producer_properties: {acks: "1"}\nroutes: [{mqtt_filter: "a", kafka_topic: "t"}]\n',
         "kafka.producer_properties.acks", 4),
    ],
)
def test_run_refuses_a_bad_config_with_exit_78_and_leaves_the_queue_alone(tmp_workdir, body, key, line):
    data_dir = tmp_workdir / "data"
    cfg = tmp_workdir / "edgefwd.yaml"
    cfg.write_text(f"data_dir: {data_dir}\n" + body)
    out = edgefwd("run", "--config", str(cfg))
    assert out.returncode == 78, out
    # the message names the file, the line and the key path
    assert f"{cfg}:{line + 1}:" in out.stderr, out.stderr
    assert key in out.stderr
    assert not data_dir.exists(), "a config error must not touch the queue"


def test_wrong_mqtt_credentials_are_reported_and_the_secret_never_shown(mosquitto_factory, tmp_workdir):
    secret = "s3cr3t-Pa55w0rd-xyz"
    passwd = tmp_workdir / "mosquitto.passwd"
    passwd.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "edgefwd", "the-right-one"], check=True)
    broker = mosquitto_factory(extra_conf={"allow_anonymous": "false", "password_file": str(passwd)})
    config = make_config(tmp_workdir, mqtt_port=broker.port, bootstrap=f"127.0.0.1:{free_port()}", routes=ROUTES)
    config["mqtt"].update({"username": "edgefwd", "password": "${env:EDGEFWD_TEST_MQTT_PASSWORD}"})
    with AgentRunner(tmp_workdir, config, env={"EDGEFWD_TEST_MQTT_PASSWORD": secret}) as agent:
        agent.start()
        doc = agent.wait_for(lambda d: d["mqtt"]["last_error"], timeout=60, what="an MQTT error")
        assert "authori" in doc["mqtt"]["last_error"].lower() or "password" in doc["mqtt"]["last_error"].lower()
        assert doc["mqtt"]["connected"] is False
        doc, rc = agent.status()
        assert rc >= 1
        text, _ = agent.status_text()
        time.sleep(1.5)
        assert agent.stop() == 0
    check = edgefwd("check", "--config", str(agent.config_path), env={"EDGEFWD_TEST_MQTT_PASSWORD": secret})
    assert check.returncode == 1 and "mqtt: FAILED" in check.stdout
    everything = "".join([
        agent.log_path.read_text(), text, str(doc), check.stdout, check.stderr,
        (agent.runtime_dir / "status.json").read_text(), agent.config_path.read_text(),
    ])
    assert secret not in everything
