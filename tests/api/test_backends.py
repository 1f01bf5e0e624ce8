"""Choosing backends: round robin from a random start, and a retry avoids the one that failed."""

from __future__ import annotations

import random

from watercolor.api.common.backends import Backends, _backoff, address_label
from watercolor.api.common.metrics import Metrics
from watercolor.config import load_settings


def make(spec: str, seed: int = 1) -> Backends:
    settings = load_settings({}, process_backends=spec)
    return Backends(settings, Metrics(), rng=random.Random(seed))


def test_round_robin_covers_every_backend_evenly():
    backends = make("a:1,b:2,c:3")
    picks = [backends.pick() for _ in range(9)]
    assert sorted(picks) == sorted([("a", 1), ("b", 2), ("c", 3)] * 3)
    assert picks[:3] == picks[3:6]


def test_start_is_random():
    starts = {make("a:1,b:2,c:3", seed).pick() for seed in range(20)}
    assert len(starts) > 1


def test_a_retry_avoids_the_backend_that_just_failed():
    backends = make("a:1,b:2")
    for _ in range(6):
        assert backends.pick(avoid=("a", 1)) == ("b", 2)


def test_a_single_service_address_is_always_used():
    settings = load_settings({}, process_service_host="10.0.0.7", process_service_port=32017)
    backends = Backends(settings, Metrics())
    assert {backends.pick(avoid=("10.0.0.7", 32017)) for _ in range(3)} == {("10.0.0.7", 32017)}


def test_backoff_grows_with_jitter_up_to_a_cap():
    rng = random.Random(3)
    pauses = [_backoff((0.1, 2.0), n, rng) for n in range(1, 10)]
    assert all(0.05 <= p <= 2.0 for p in pauses)
    assert pauses[0] <= 0.1 and max(pauses[5:]) > 0.9


def test_address_labels():
    assert address_label(("127.0.0.1", 32017)) == "127.0.0.1:32017"
    assert address_label(("::1", 5)) == "[::1]:5"


def test_a_backend_busy_with_this_apis_images_is_passed_over_for_an_idle_one():
    backends = make("a:1,b:2,c:3")
    with backends._working_at(("a", 1)), backends._working_at(("b", 2)):
        assert {backends.pick() for _ in range(6)} == {("c", 3)}
        with backends._working_at(("c", 3)), backends._working_at(("c", 3)):
            assert {backends.pick() for _ in range(6)} == {("a", 1), ("b", 2)}  # equals take turns
    assert backends._working == {("a", 1): 0, ("b", 2): 0, ("c", 3): 0}


def test_the_failed_backend_is_avoided_even_when_it_is_the_least_busy():
    backends = make("a:1,b:2")
    with backends._working_at(("b", 2)):
        assert backends.pick(avoid=("a", 1)) == ("b", 2)
