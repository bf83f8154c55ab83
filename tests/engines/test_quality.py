"""Adaptive quality steps down under load, up with headroom, and does not flap."""

from streamfx.pipeline.engines.threedpe.quality import AdaptiveQuality, QualityConfig

PRESETS = ["full", "balanced", "fast", "fastest"]


def test_steps_down_under_load_and_up_with_headroom():
    q = AdaptiveQuality(PRESETS, QualityConfig(budget_ms=40, window=10, cooldown=10), start="full")
    changes = []
    for _ in range(100):
        ms = {"full": 300, "balanced": 90, "fast": 45, "fastest": 30}[q.current]
        before = q.current
        if q.record(ms) != before:
            changes.append(q.current)
    assert q.current == "fastest"
    assert changes == ["balanced", "fast", "fastest"]  # one step at a time, never back up: 30 ms > 0.6*40


def test_recovers_and_ignores_single_spikes():
    q = AdaptiveQuality(PRESETS, QualityConfig(budget_ms=40, window=30, cooldown=30), start="fastest")
    for _ in range(30):
        q.record(10)  # plenty of headroom: one step up after a full window
    assert q.current == "fast"
    for i in range(29):
        q.record(500 if i == 10 else 30)  # one slow frame, otherwise within budget but without headroom
    assert q.current == "fast"


def test_pin_disables_adaptation():
    q = AdaptiveQuality(PRESETS, QualityConfig(window=5, cooldown=5))
    q.pin("full")
    for _ in range(50):
        q.record(1000)
    assert q.current == "full"
    q.pin("auto")
    for _ in range(20):
        q.record(1000)
    assert q.current != "full"
