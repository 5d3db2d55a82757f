"""Differential test of topic matching against a real peer: paho-mqtt's topic_matches_sub.

Over more than 100,000 seeded random (filter, topic) pairs of valid MQTT input the two
must agree exactly. Where they differ on purpose (paho does not validate its input and
does not know shared subscriptions) the cases are listed in DIFFERENCES, checked below,
and explained in docs/topics-and-templates.md with the specification's verdict.
"""

import random

import pytest
from paho.mqtt.client import topic_matches_sub

from edgefwd import _core as c

SEED = 20_240_501
PAIRS = 120_000

# Literal levels chosen so that filters and topics collide often; '$' levels exercise the
# rule that a leading wildcard does not match a topic starting with '$'.
LITERALS = ["", "a", "b", "c", "ab", "$", "$a", "$SYS", "é", " ", "x y"]


def random_filter(rng: random.Random) -> str:
    n = rng.randint(0, 4)
    levels = [rng.choice(LITERALS) if rng.random() < 0.6 else "+" for _ in range(n)]
    if not levels or rng.random() < 0.3:
        levels.append("#")
    f = "/".join(levels)
    return f or "#"


def random_topic(rng: random.Random) -> str:
    t = "/".join(rng.choice(LITERALS) for _ in range(rng.randint(1, 5)))
    return t or "a"


def topic_from_filter(rng: random.Random, f: str) -> str:
    """A topic built to match `f` (wildcards filled at random), so that about half of
    the pairs are matches."""
    out: list[str] = []
    for level in f.split("/"):
        if level == "+":
            out.append(rng.choice(LITERALS))
        elif level == "#":
            out.extend(rng.choice(LITERALS) for _ in range(rng.randint(0, 2)))
        else:
            out.append(level)
    t = "/".join(out)
    return t or "a"


def test_agrees_with_paho_on_valid_input():
    rng = random.Random(SEED)
    disagreements = []
    matched = 0
    for i in range(PAIRS):
        f = random_filter(rng)
        t = topic_from_filter(rng, f) if i % 2 else random_topic(rng)
        ours = c.topic_matches(f, t)  # validates both: raises on invalid input
        theirs = topic_matches_sub(f, t)
        matched += ours
        if ours != theirs:
            disagreements.append((f, t, ours, theirs))
    assert not disagreements[:20], f"{len(disagreements)} disagreements, first: {disagreements[:20]}"
    # the generator must produce both outcomes in quantity, or the test proves little
    assert PAIRS * 0.2 < matched < PAIRS * 0.8


def test_router_agrees_with_paho():
    """The route trie, not only the one-filter matcher, against paho."""
    rng = random.Random(SEED + 1)
    for _ in range(200):
        filters = [random_filter(rng) for _ in range(rng.randint(1, 30))]
        router = c.Router([(f, "t", None) for f in filters], "gw")
        for _ in range(50):
            t = topic_from_filter(rng, rng.choice(filters)) if rng.random() < 0.5 else random_topic(rng)
            want = [i for i, f in enumerate(filters) if topic_matches_sub(f, t)]
            assert router.matching_routes(t) == want, (filters, t)


# (filter, topic, paho's answer, edgefwd's answer: True/False, or "TopicError")
DIFFERENCES = [
    # paho does not validate: wildcards inside a level are literal characters to it
    ("a+", "a+", True, "TopicError"),
    ("a/b#", "a/b#", True, "TopicError"),
    ("#/a", "#/a", True, "TopicError"),
    ("+a/b", "+a/b", True, "TopicError"),
    # paho matches topic names that contain wildcards (a PUBLISH may not carry them)
    ("+", "+", True, "TopicError"),
    ("a/#", "a/#", True, "TopicError"),
    ("#", "a/+/b", True, "TopicError"),
    # zero-length filter and topic name are invalid in MQTT; paho matches "" with ""
    ("", "", True, "TopicError"),
    ("#", "", True, "TopicError"),
    # U+0000 is not allowed in any MQTT string
    ("a\0", "a\0", True, "TopicError"),
    # shared subscriptions: paho compares "$share/<group>/" literally
    ("$share/g/a/+", "a/b", False, True),
    ("$share/g/#", "x", False, True),
    ("$share/g/#", "$SYS/x", False, False),
    ("$share/g/a", "$share/g/a", True, False),
    # longer than the 65,535-byte limit of an MQTT string
    ("#", "a" * 65_536, True, "TopicError"),
]


@pytest.mark.parametrize(("filter_", "topic", "paho", "ours"), DIFFERENCES)
def test_documented_differences(filter_, topic, paho, ours):
    assert topic_matches_sub(filter_, topic) is paho
    if ours == "TopicError":
        with pytest.raises(c.TopicError):
            c.topic_matches(filter_, topic)
    else:
        assert c.topic_matches(filter_, topic) is ours
