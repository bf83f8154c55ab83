"""The frame batcher: grouping, ordering, per-caller routing, the wait limit, failures and
stream ordering, with a fake model whose outputs identify each caller's rows; then batch
results against per-caller results on the real 3DPE model (random weights)."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch
from stream_recorder import RecordingStreamOps

from streamfx.models.renderer.presets import get_preset
from streamfx.runtime.batching import BatchConfig, BatchedModel, BatchError, FrameBatcher

TIMEOUT = 20.0


class FakeModel:
    """encode: planes = x * 10 + tokens (one value per row, so rows can be traced);
    render: image = planes + camera[:, 0] + the preset's output size. Logs each call; the
    first call can be held (``hold``) so that others pile up behind it."""

    def __init__(self, per_sample_adapters: bool = False) -> None:
        self.per_sample_adapters = per_sample_adapters
        self.calls: list[tuple] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def encode(self, x, tokens, adapters=None, adapter=None):
        self.entered.set()
        self.hold.wait(TIMEOUT)
        if torch.isnan(x).any():
            raise ValueError("a NaN frame")
        self.calls.append(("encode", x.shape[0], [float(v) for v in x.flatten(1)[:, 0]], adapters, adapter))
        return x * 10 + tokens

    def render(self, planes, camera, preset):
        self.entered.set()
        self.hold.wait(TIMEOUT)
        self.calls.append(("render", planes.shape[0], preset.name, [float(v) for v in planes.flatten(1)[:, 0]]))
        out = planes + camera[:, :1, None, None] + preset.output_size
        return {"image": out, "image_raw": out * 0, "image_depth": planes[:, :1]}


def frame(value: float) -> torch.Tensor:
    return torch.full((1, 2, 2, 2), float(value))


def tokens(value: float) -> torch.Tensor:
    return torch.full((1, 2, 2, 2), float(value))


def camera(value: float) -> torch.Tensor:
    return torch.full((1, 25), float(value))


class Caller(threading.Thread):
    def __init__(self, fn, *args, **kwargs) -> None:
        super().__init__(daemon=True)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result = self.error = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args, **self.kwargs)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            self.error = exc


def start(fn, *args, **kwargs) -> Caller:
    caller = Caller(fn, *args, **kwargs)
    caller.start()
    return caller


def wait_pending(batcher: FrameBatcher, n: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while len(batcher._pending) < n:
        assert time.monotonic() < deadline, f"expected {n} pending calls, have {len(batcher._pending)}"
        time.sleep(0.002)


def held(model: FakeModel, batcher: FrameBatcher) -> Caller:
    """A first call that holds the model, so that the following calls queue behind it."""
    model.hold.clear()
    blocker = start(batcher.encode, frame(99), tokens(0))
    assert model.entered.wait(TIMEOUT)
    return blocker


def finish(*callers: Caller) -> None:
    for c in callers:
        c.join(TIMEOUT)
        assert not c.is_alive()


def test_concurrent_calls_run_as_one_batch_and_each_caller_gets_its_own_rows():
    model = FakeModel()
    batcher = FrameBatcher(model, BatchConfig(window_ms=10_000, max_batch=3))  # only a full batch is sent
    callers = [start(batcher.encode, frame(i), tokens(i / 10)) for i in range(3)]
    finish(*callers)
    assert [c[:2] for c in model.calls] == [("encode", 3)]
    for i, c in enumerate(callers):
        assert c.error is None
        assert c.result.shape == (1, 2, 2, 2)
        assert torch.allclose(c.result, torch.full((1, 2, 2, 2), i * 10 + i / 10))
    assert batcher.stats()["sizes"] == {3: 1}
    batcher.close()


def test_groups_by_operation_and_preset_in_arrival_order():
    model = FakeModel()
    batcher = FrameBatcher(model, BatchConfig(window_ms=0, max_batch=8))
    blocker = held(model, batcher)
    calls = []
    for fn, args in [(batcher.render, (frame(1), camera(0), "fast")), (batcher.render, (frame(2), camera(0), "full")),
                     (batcher.render, (frame(3), camera(0), "fast")), (batcher.encode, (frame(4), tokens(0)))]:
        calls.append(start(fn, *args))
        wait_pending(batcher, len(calls))
    model.hold.set()
    finish(blocker, *calls)
    assert [c[:3] for c in model.calls[1:]] == [("render", 2, "fast"), ("render", 1, "full"), ("encode", 1, [4.0])]
    assert model.calls[1][3] == [1.0, 3.0]  # the first fast call's rows come first
    fast_size = get_preset("fast").output_size
    assert float(calls[0].result["image"].flatten()[0]) == 1 + fast_size
    assert float(calls[2].result["image"].flatten()[0]) == 3 + fast_size
    assert float(calls[1].result["image"].flatten()[0]) == 2 + get_preset("full").output_size
    batcher.close()


def test_max_batch_splits_a_larger_group():
    model = FakeModel()
    batcher = FrameBatcher(model, BatchConfig(window_ms=0, max_batch=2))
    blocker = held(model, batcher)
    calls = []
    for i in range(5):
        calls.append(start(batcher.encode, frame(i), tokens(0)))
        wait_pending(batcher, i + 1)
    model.hold.set()
    finish(blocker, *calls)
    assert [c[1] for c in model.calls[1:]] == [2, 2, 1]
    assert [c[2] for c in model.calls[1:]] == [[0.0, 1.0], [2.0, 3.0], [4.0]]


def test_a_call_whose_deadline_allows_no_wait_goes_alone():
    model = FakeModel()
    batcher = FrameBatcher(model, BatchConfig(window_ms=10_000, max_batch=8))
    waiting = start(batcher.encode, frame(1), tokens(0))      # no deadline: waits for company
    wait_pending(batcher, 1)
    urgent = start(batcher.encode, frame(2), tokens(0), deadline=time.monotonic() + 0.005)
    finish(urgent)
    assert urgent.error is None and waiting.is_alive()
    assert [c[2] for c in model.calls] == [[2.0]]
    assert batcher.stats()["alone"] == 1
    batcher.close()  # sends what is pending
    finish(waiting)
    assert waiting.error is None and [c[2] for c in model.calls] == [[2.0], [1.0]]


def test_the_window_sends_a_lone_call():
    model = FakeModel()
    batcher = FrameBatcher(model, BatchConfig(window_ms=20, max_batch=8))
    out = batcher.encode(frame(5), tokens(0))
    assert float(out.flatten()[0]) == 50.0
    batcher.close()


def test_a_failing_batch_fails_only_its_own_frame_and_the_batcher_goes_on():
    model = FakeModel()
    batcher = FrameBatcher(model, BatchConfig(window_ms=0, max_batch=8))
    blocker = held(model, batcher)
    calls = []
    for value in (1.0, float("nan"), 3.0):
        calls.append(start(batcher.encode, frame(value), tokens(0)))
        wait_pending(batcher, len(calls))
    model.hold.set()
    finish(blocker, *calls)
    good1, bad, good2 = calls
    assert good1.error is None and good2.error is None
    assert float(good1.result.flatten()[0]) == 10.0 and float(good2.result.flatten()[0]) == 30.0
    assert isinstance(bad.error, ValueError) and "NaN" in str(bad.error)
    stats = batcher.stats()
    assert stats["retried_batches"] == 1 and stats["failed_calls"] == 1
    assert float(batcher.encode(frame(7), tokens(0)).flatten()[0]) == 70.0  # still serving
    batcher.close()
    with pytest.raises(BatchError, match="closed"):
        batcher.encode(frame(1), tokens(0))


def test_batches_carry_each_rows_adapter_when_the_model_applies_them_per_sample():
    adapters = {"ink": object(), "clay": object()}
    for per_sample, expected in ((True, [2]), (False, [1, 1])):
        model = FakeModel(per_sample_adapters=per_sample)
        batcher = FrameBatcher(model, BatchConfig(window_ms=0, max_batch=8))
        blocker = held(model, batcher)
        a = start(batcher.encode, frame(1), tokens(0), adapter=adapters["ink"])
        wait_pending(batcher, 1)
        b = start(batcher.encode, frame(2), tokens(0), adapter=adapters["clay"])
        wait_pending(batcher, 2)
        model.hold.set()
        finish(blocker, a, b)
        assert [c[1] for c in model.calls[1:]] == expected
        if per_sample:
            assert model.calls[1][3] == [adapters["ink"], adapters["clay"]]
        else:
            assert [c[4] for c in model.calls[1:]] == [adapters["ink"], adapters["clay"]]
        batcher.close()


def test_batched_work_is_ordered_after_each_callers_stream_and_before_its_use():
    ops = RecordingStreamOps()

    class Logged(FakeModel):
        def encode(self, x, tokens, adapters=None, adapter=None):
            ops.note("encode", ops.current(), x.shape[0])
            return super().encode(x, tokens)

    model = Logged()
    batcher = FrameBatcher(model, BatchConfig(window_ms=10_000, max_batch=2), streams=ops)

    def session(name: str, value: float):
        ops.set_current(name)
        return batcher.encode(frame(value), tokens(0))

    a, b = start(session, "sessionA", 1), start(session, "sessionB", 2)
    finish(a, b)
    log = ops.log
    work = ops.index("encode", batcher.stream, 2)  # the batch ran on the batcher's stream
    ready = {entry[2]: entry[1] for entry in log if entry[0] == "record" and entry[1].startswith("session")}
    waits_before = [e for e in log[:work] if e[0] == "wait" and e[1] == batcher.stream]
    assert sorted(ready[e[2]] for e in waits_before) == ["sessionA", "sessionB"]
    done = next(e[2] for e in log[work:] if e[0] == "record" and e[1] == batcher.stream)
    assert ("synchronize", done) in log[work:]
    for name in ("sessionA", "sessionB"):
        assert ("wait", name, done) in log[work:]
        assert ops.index("wait", name, done) < ops.index("hand_over", name)
    batcher.close()


def test_one_frame_per_call():
    batcher = FrameBatcher(FakeModel())
    with pytest.raises(ValueError, match="one frame each"):
        batcher.encode(torch.zeros(2, 2, 2, 2), torch.zeros(2, 2, 2, 2))
    batcher.close()
    with pytest.raises(ValueError, match="max batch"):
        BatchConfig(max_batch=0)


def test_batch_results_equal_per_caller_results_on_the_3dpe_model():
    from streamfx.models import random_weights, threedpe
    from streamfx.models.renderer import look_at_camera
    from streamfx.models.renderer.scenes import analytic_planes
    from streamfx.runtime.accelerated import load_accelerated

    model = load_accelerated(threedpe.from_state(random_weights.random_state_dicts(seed=5)), "torch-fp32")
    batched = BatchedModel(model, FrameBatcher(model, BatchConfig(window_ms=10_000, max_batch=2)))
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(1, 3, 512, 512, generator=g) * 2 - 1 for _ in range(2)]
    toks = [torch.randn(1, 197, 768, generator=g) for _ in range(2)]
    planes = [analytic_planes(1.0), analytic_planes(1.0).flip(-1)]
    cams = [look_at_camera(math.pi / 2 + 0.3, math.pi / 2), look_at_camera(math.pi / 2 - 0.2, math.pi / 2 + 0.1)]
    renders = [start(batched.render, planes[i], cams[i], "fastest") for i in range(2)]
    encodes = [start(batched.encode, xs[i], toks[i]) for i in range(2)]
    finish(*renders, *encodes)
    assert batched.batcher.stats()["sizes"] == {2: 2}
    for i in range(2):
        alone = model.render(planes[i], cams[i], "fastest")
        for key in ("image", "image_raw", "image_depth"):
            assert torch.allclose(renders[i].result[key], alone[key], atol=1e-5), key
        assert torch.allclose(encodes[i].result, model.encode(xs[i], toks[i]), atol=1e-4)
    assert not torch.allclose(renders[0].result["image"], renders[1].result["image"])
    batched.close()


def test_batches_pad_up_to_the_prepared_sizes():
    from streamfx.runtime.batching import batch_sizes_for
    from streamfx.runtime.contrib.torch_cuda import pad_rows, padded_size

    assert batch_sizes_for(8) == (1, 2, 4, 8) and batch_sizes_for(6) == (1, 2, 4, 6) and batch_sizes_for(1) == (1,)
    graphs = {1: None, 2: None, 4: None, 8: None}
    assert [padded_size(graphs, n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, None]
    t = torch.arange(6.0).view(3, 2)
    padded = pad_rows(t, 4)
    assert padded.shape == (4, 2) and torch.equal(padded[:3], t) and torch.equal(padded[3], t[2])
