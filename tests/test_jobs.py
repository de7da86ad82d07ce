"""The worker pool: order, coalescing, cancel time, errors, pause, device hand-over, shutdown."""

import threading
import time

import pytest

from playground.errors import BadFileError, ErrorKind, OfflineError
from playground.jobs import JobState, check_cancelled
from playground.progress import Progress


def collect(job):
    got = {"items": [], "batches": 0, "failed": None, "finished": None, "progress": []}

    def on_results(items):
        got["items"].extend(items)
        got["batches"] += 1

    job.results.connect(on_results)
    job.failed.connect(lambda m: got.__setitem__("failed", m))
    job.finished.connect(lambda v: got.__setitem__("finished", v))
    job.progress.connect(lambda f, t: got["progress"].append((f, t)))
    return got


def test_results_arrive_in_order_and_coalesced(qtbot, pool):
    def many():
        yield from range(20000)
        return "done"

    job = pool.submit(many, name="many")
    got = collect(job)
    with qtbot.waitSignal(job.ended, timeout=20000):
        pass
    assert got["items"] == list(range(20000))
    assert got["finished"] == "done"
    assert job.state == JobState.FINISHED
    # 20,000 yields must not become 20,000 GUI events.
    assert got["batches"] < 2000


def test_progress_is_separate_from_results(qtbot, pool):
    def work():
        yield Progress(0.5, "half")
        yield "a"
        yield Progress(1.0, "all")

    job = pool.submit(work)
    got = collect(job)
    with qtbot.waitSignal(job.ended, timeout=5000):
        pass
    assert got["items"] == ["a"]
    assert got["progress"][-1] == (1.0, "all")


def test_plain_function_returns_value(qtbot, pool):
    job = pool.submit(lambda a, b: a + b, 2, 3)
    got = collect(job)
    with qtbot.waitSignal(job.ended, timeout=5000):
        pass
    assert got["finished"] == 5


def test_cancel_stops_a_job_that_yields_every_tenth_of_a_second(qtbot, pool):
    closed = threading.Event()

    def slow():
        try:
            while True:
                time.sleep(0.1)
                yield 1
        finally:
            closed.set()

    job = pool.submit(slow)
    qtbot.waitUntil(lambda: job.state == JobState.RUNNING, timeout=5000)
    t0 = time.monotonic()
    job.cancel()
    with qtbot.waitSignal(job.ended, timeout=5000) as blocker:
        pass
    elapsed = time.monotonic() - t0
    assert blocker.args == [JobState.CANCELLED]
    assert closed.is_set(), "the generator's finally block must run on cancel"
    assert elapsed < 1.5  # the spec is 0.5 s; generous for a loaded CI machine


def test_inner_loops_can_poll_for_cancel(qtbot, pool):
    def long_inner_loop():
        yield "started"
        while True:
            check_cancelled()
            time.sleep(0.01)

    job = pool.submit(long_inner_loop)
    got = collect(job)
    qtbot.waitUntil(lambda: got["items"] == ["started"], timeout=5000)
    job.cancel()
    with qtbot.waitSignal(job.ended, timeout=5000) as blocker:
        pass
    assert blocker.args == [JobState.CANCELLED]


def test_exception_becomes_message_and_partial_results_stay(qtbot, pool):
    def broken():
        yield 1
        yield 2
        raise ValueError("the data has NaN in column 3")

    job = pool.submit(broken, name="broken")
    got = collect(job)
    with qtbot.waitSignal(job.ended, timeout=5000):
        pass
    assert job.state == JobState.FAILED
    assert got["items"] == [1, 2]
    assert "ValueError" in got["failed"] and "NaN in column 3" in got["failed"]
    assert "Traceback" not in got["failed"]


def test_pause_and_resume(qtbot, pool):
    count = [0]

    def ticking():
        while True:
            count[0] += 1
            time.sleep(0.01)
            yield count[0]

    job = pool.submit(ticking)
    qtbot.waitUntil(lambda: count[0] > 3, timeout=5000)
    job.pause()
    assert job.state == JobState.PAUSED
    qtbot.wait(100)
    frozen = count[0]
    qtbot.wait(300)
    assert count[0] <= frozen + 1
    job.resume()
    qtbot.waitUntil(lambda: count[0] > frozen + 5, timeout=5000)
    job.cancel()
    with qtbot.waitSignal(job.ended, timeout=5000):
        pass


def test_interactive_job_waits_at_most_one_training_step(qtbot, pool):
    step_s = 0.25
    log = []

    def training():
        while True:
            log.append(("B", time.monotonic()))
            time.sleep(step_s)  # one "training step" holding the device
            yield None

    def interactive():
        for _ in range(5):
            log.append(("I", time.monotonic()))
            time.sleep(0.005)
            yield None

    background = pool.submit(training, device="cpu")
    qtbot.waitUntil(lambda: len(log) >= 2, timeout=5000)
    t_submit = time.monotonic()
    fast = pool.submit(interactive, device="cpu", interactive=True)
    with qtbot.waitSignal(fast.ended, timeout=10000):
        pass
    first_i = next(t for kind, t in log if kind == "I")
    assert first_i - t_submit < step_s * 1.8
    # Between the interactive job's steps, the background job gets at most one step each time.
    i_idx = [k for k, (kind, _) in enumerate(log) if kind == "I"]
    between = [kind for kind, _ in log[i_idx[0]:i_idx[-1]]]
    assert between.count("B") <= len(i_idx)
    background.cancel()
    with qtbot.waitSignal(background.ended, timeout=5000):
        pass


def test_jobs_on_different_devices_run_side_by_side(qtbot, pool):
    running = {"a": threading.Event(), "b": threading.Event()}

    def job(me, other):
        running[me].set()
        assert running[other].wait(5), "the other device's job never ran at the same time"
        yield me

    a = pool.submit(job, "a", "b", device="cpu")
    b = pool.submit(job, "b", "a", device="cuda:0")
    with qtbot.waitSignals([a.ended, b.ended], timeout=10000):
        pass
    assert a.state == b.state == JobState.FINISHED


def test_shutdown_cancels_and_joins_running_jobs(qtbot):
    from playground.jobs import JobPool

    pool = JobPool()
    started = []

    def forever(k):
        started.append(k)
        while True:
            time.sleep(0.05)
            yield k

    jobs = [pool.submit(forever, k, device=f"dev{k}") for k in range(3)]
    qtbot.waitUntil(lambda: len(started) == 3, timeout=5000)
    got = [collect(j) for j in jobs]
    t0 = time.monotonic()
    assert pool.shutdown(timeout_s=5)
    assert time.monotonic() - t0 < 3
    assert pool._threads == []  # cleared only once every thread has stopped
    assert [j.state for j in jobs] == [JobState.CANCELLED] * 3
    # Results yielded before the shutdown are still delivered.
    assert all(g["items"] for g in got)
    with pytest.raises(RuntimeError):
        pool.submit(forever, 9)


def test_background_jobs_on_one_device_take_turns(qtbot, pool):
    steps = {"a": 0, "b": 0}

    def busy(name):
        while True:
            steps[name] += 1
            time.sleep(0.002)  # a short "training step" holding the device
            yield None

    a = pool.submit(busy, "a", device="cpu")
    b = pool.submit(busy, "b", device="cpu")
    qtbot.wait(1000)
    a.cancel()
    b.cancel()
    with qtbot.waitSignals([a.ended, b.ended], timeout=5000):
        pass
    assert steps["a"] > 20 and steps["b"] > 20, steps
    assert 0.25 < steps["a"] / (steps["a"] + steps["b"]) < 0.75, steps


def test_ended_jobs_let_go_of_their_inputs(qtbot, pool):
    import gc
    import weakref

    class Payload:
        pass

    payload = Payload()
    ref = weakref.ref(payload)
    job = pool.submit(lambda p: 1, payload)
    with qtbot.waitSignal(job.ended, timeout=5000):
        pass
    del payload
    gc.collect()
    assert ref() is None
    assert job not in pool.children()


# -- the kit's additions: one value for anything but a generator, input, error kinds ---------
def _one_value(qtbot, pool, fn):
    job = pool.submit(fn)
    got = collect(job)
    with qtbot.waitSignal(job.ended, timeout=5000):
        pass
    return job, got


@pytest.mark.parametrize("kind", ["array", "tensor", "list", "range", "tuple", "dict", "iterator"])
def test_a_plain_function_returning_an_iterable_is_one_result(qtbot, pool, kind):
    import numpy as np
    import torch

    value = {"array": np.arange(12).reshape(4, 3), "tensor": torch.ones(5, 2), "list": [1, 2, 3],
             "range": range(7), "tuple": (1, 2), "dict": {"a": 1}, "iterator": iter([1, 2])}[kind]
    job, got = _one_value(qtbot, pool, lambda: value)
    assert job.state == JobState.FINISHED
    assert got["items"] == []  # nothing delivered row by row
    assert got["finished"] is value


def test_states_are_an_enum(qtbot, pool):
    states = []
    job = pool.submit(lambda: 1)
    job.stateChanged.connect(states.append)
    with qtbot.waitSignal(job.ended, timeout=5000) as blocker:
        pass
    assert blocker.args == [JobState.FINISHED] and isinstance(blocker.args[0], JobState)
    assert all(isinstance(s, JobState) for s in states) and states[-1] is JobState.FINISHED
    assert JobState.FINISHED.ended and not JobState.RUNNING.ended


def test_input_reaches_a_running_job_in_order_between_yields(qtbot, pool):
    seen = []
    ready = threading.Event()

    def listener():
        for step in range(400):
            inputs = yield ("step", step)
            if inputs is not None:
                seen.append((step, list(inputs)))
                if inputs[-1] == "stop":
                    return [v for _, batch in seen for v in batch]
            ready.set()
            time.sleep(0.01)
        return None

    job = pool.submit(listener)
    assert ready.wait(5)
    sender_done = threading.Event()

    def from_another_thread():  # send() is thread-safe, not only for the GUI thread
        for k in range(50):
            job.send(("other", k))
        sender_done.set()

    for k in range(20):
        job.send(k)
    t = threading.Thread(target=from_another_thread)
    t.start()
    t.join()
    assert sender_done.is_set()
    job.send("stop")
    with qtbot.waitSignal(job.ended, timeout=10000):
        pass
    received = job.value
    assert received is not None and received[-1] == "stop"
    assert [v for v in received if isinstance(v, int)] == list(range(20))
    assert [v[1] for v in received if isinstance(v, tuple)] == list(range(50))
    assert all(isinstance(batch, list) and batch for _, batch in seen)
    assert not job.send("late")  # an ended job takes no input


def test_a_job_that_takes_no_input_still_gets_none_at_every_yield(qtbot, pool):
    got_values = []

    def plain():
        for _ in range(3):
            got_values.append((yield 1))

    job, _ = _one_value(qtbot, pool, plain)
    assert job.state == JobState.FINISHED and got_values == [None, None, None]


@pytest.mark.parametrize("exc, kind", [
    (MemoryError(), ErrorKind.OUT_OF_MEMORY),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), ErrorKind.OUT_OF_MEMORY),
    (BadFileError("model.pt is truncated"), ErrorKind.BAD_FILE),
    (OfflineError("no network"), ErrorKind.OFFLINE),
    (ValueError("bad value"), ErrorKind.BAD_INPUT),
    (ZeroDivisionError("division by zero"), ErrorKind.INTERNAL),
])
def test_a_failed_job_keeps_its_exceptions_kind(qtbot, pool, exc, kind):
    def boom():
        yield 1
        raise exc

    job, got = _one_value(qtbot, pool, boom)
    assert job.state == JobState.FAILED and job.error_kind is kind
    assert got["failed"] and "Traceback" not in got["failed"]


def test_a_cancelled_job_says_so_in_its_kind(qtbot, pool):
    def forever():
        while True:
            yield 1
            time.sleep(0.01)

    job = pool.submit(forever)
    qtbot.waitUntil(lambda: job.state == JobState.RUNNING, timeout=5000)
    job.cancel()
    with qtbot.waitSignal(job.ended, timeout=5000):
        pass
    assert job.state == JobState.CANCELLED and job.error_kind is ErrorKind.CANCELLED


def test_garbage_is_collected_on_the_gui_thread_only(qtbot, pool):
    """A worker making cyclic garbage never runs the collector (it could free widgets there);
    the GUI thread's timer collects it instead."""
    import gc
    import threading

    from playground.jobs import GuiThreadCollector

    assert not gc.isenabled()
    collector = GuiThreadCollector.install()
    assert collector is GuiThreadCollector.install()  # one per application
    started_on: list[str] = []

    def note(phase, _info):
        if phase == "start":
            started_on.append(threading.current_thread().name)

    class Cycle:
        def __init__(self):
            self.me = self

    def make_garbage():
        for _ in range(20 * gc.get_threshold()[0]):
            Cycle()
        return gc.get_count()[0]

    gc.callbacks.append(note)
    before = collector.collections     # (read before the job: the timer may collect as soon as it ends)
    try:
        job = pool.submit(make_garbage)
        qtbot.waitUntil(lambda: job.is_done, timeout=20000)
        assert job.value > gc.get_threshold()[0]  # the garbage is still there: nobody collected on the worker
        # the GUI thread's timer may have collected meanwhile; no other thread ever does
        assert set(started_on) <= {threading.main_thread().name}
        qtbot.waitUntil(lambda: collector.collections > before, timeout=5000)
        assert started_on and set(started_on) == {threading.main_thread().name}
        assert gc.get_count()[0] < gc.get_threshold()[0]
    finally:
        gc.callbacks.remove(note)


def test_settle_freezes_what_exists_once_so_later_collections_scan_only_new_objects(qtbot, pool, monkeypatch):
    import gc

    from playground.jobs import GuiThreadCollector

    monkeypatch.setattr(GuiThreadCollector, "_settled", False)
    before = gc.get_freeze_count()
    try:
        GuiThreadCollector.settle()
        frozen = gc.get_freeze_count()
        assert frozen > before and frozen > 1000  # the imported libraries at least
        GuiThreadCollector.settle()  # once per process
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()  # (tests that follow expect ordinary collection)
