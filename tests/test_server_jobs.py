"""The job queue and worker, without sockets: cancel within one sampler step, shutdown."""

from __future__ import annotations

import threading

import pytest

from plugin_bridge import protocol as P
from plugin_bridge.protocol import ErrorCode
from server_fixtures import tiny_bundle  # noqa: F401
from server.jobs import Job, Worker
from server.requests import Limits, ModelInfo, build_request
from server.runtime import Bundle


class RecordingSink:
    def __init__(self, on_step=None):
        self.steps, self.chunks, self.final, self.on_step = [], 0, None, on_step
        self.finished = threading.Event()

    def progress(self, job, step, total, window, windows, eta):
        self.steps.append(step)
        if self.on_step:
            self.on_step(job, step)

    def chunk(self, job, stem, offset, audio, window, final, take=0):
        self.chunks += 1

    def done(self, job, info):
        self.final = ("done", info)
        self.finished.set()

    def error(self, job, code, message):
        self.final = (code, message)
        self.finished.set()


@pytest.fixture(scope="module")
def worker(tiny_bundle):  # noqa: F811
    b = Bundle.load(tiny_bundle)
    w = Worker(b, Limits(max_queue=2, max_queue_per_client=2))
    w.start()
    yield w
    w.stop()


def _job(worker, job_id, sink, client="c", **kw):
    h = {"type": "generate", "job_id": job_id, "given": [], "generate": ["bass"], "duration": 30.0,
         "steps": 500, **kw}
    b = worker.bundle
    model = ModelInfo(b.stems, b.sample_rate, ("euler", "heun"), 4, "euler")
    return Job(client, build_request(P.decode(P.encode(h)), model, Limits()), sink)


def test_cancel_takes_effect_within_one_step(worker):
    sink = RecordingSink(on_step=lambda job, step: step == 3 and worker.cancel("c", job.job_id))
    worker.submit(_job(worker, "a", sink))
    assert sink.finished.wait(10)
    assert sink.final[0] is ErrorCode.CANCELLED
    assert sink.steps == [1, 2, 3] and sink.chunks == 0


def test_queue_limits_duplicates_and_queued_cancel(worker):
    gate = threading.Event()
    first = RecordingSink(on_step=lambda job, step: gate.wait(10))
    started = threading.Event()
    first.on_step = lambda job, step: (started.set(), gate.wait(10))
    worker.submit(_job(worker, "run", first))
    assert started.wait(10)  # running, blocked in its first step
    queued = [RecordingSink() for _ in range(2)]
    for i, s in enumerate(queued):
        worker.submit(_job(worker, f"q{i}", s))
    with pytest.raises(P.ProtocolError) as e:
        worker.submit(_job(worker, "q0", RecordingSink()))
    assert e.value.code is ErrorCode.DUPLICATE_JOB
    with pytest.raises(P.ProtocolError) as e:
        worker.submit(_job(worker, "q9", RecordingSink()))
    assert e.value.code is ErrorCode.QUEUE_FULL
    assert worker.cancel("c", "q1") and queued[1].final[0] is ErrorCode.CANCELLED
    assert not worker.cancel("other-client", "q0")
    assert worker.cancel_client("c") == 2
    gate.set()
    assert first.finished.wait(10) and queued[0].finished.wait(10)
    assert first.final[0] is ErrorCode.CANCELLED and queued[0].final[0] is ErrorCode.CANCELLED


class UnsendableDoneSink(RecordingSink):
    """A sink whose `done` fails the way an unserialisable result did (fault 1 of issue 14)."""

    def done(self, job, info):
        raise ValueError("Out of range float values are not JSON compliant")


def test_a_job_whose_done_cannot_be_sent_still_ends_with_an_error(worker, caplog):
    sink = UnsendableDoneSink()
    worker.submit(_job(worker, "unsendable", sink, duration=0.1, steps=1))
    assert sink.finished.wait(10), "the job never got a terminal message"
    code, message = sink.final
    assert code is ErrorCode.INTERNAL and "ValueError" in message
    assert any(r.exc_info for r in caplog.records), "the bug was not logged with its traceback"


def test_a_client_gets_a_share_of_the_queue(tiny_bundle):  # noqa: F811
    """Fault 6 of issue 14: waiting jobs per client are capped (default max_queue // 4)."""
    assert Limits(max_queue=64).per_client == 16 and Limits(max_queue=2).per_client == 1
    assert Limits(max_queue=8, max_queue_per_client=5).per_client == 5
    w = Worker(Bundle.load(tiny_bundle), Limits(max_queue=8))  # not started: every job waits
    for i in range(2):
        w.submit(_job(w, f"a{i}", RecordingSink(), client="a"))
    with pytest.raises(P.ProtocolError) as e:
        w.submit(_job(w, "a2", RecordingSink(), client="a"))
    assert e.value.code is ErrorCode.QUEUE_FULL and "per client" in e.value.message
    assert w.submit(_job(w, "b0", RecordingSink(), client="b")) == 2
    w.stop()


def test_done_says_the_guidance_a_guitar_and_piano_given_alone_were_sampled_with(tiny_bundle):  # noqa: F811
    # the manifest's harmony_given_guidance where a guitar and/or piano alone are given, unless the
    # request asks its own; `done` echoes the weight used
    import dataclasses

    import numpy as np

    from server.jobs import run_job

    b = Bundle.load(tiny_bundle)
    b.sampler_defaults = dataclasses.replace(b.sampler_defaults, harmony_given_guidance=2.5)
    model = ModelInfo(b.stems, b.sample_rate, ("euler", "heun"), 3, "euler")
    tone = (0.2 * np.sin(np.arange(22050) * 2 * np.pi * 220 / 22050)).astype(np.float32)

    def done_of(given, generate, **kw):
        h = {"type": "generate", "job_id": "g", "generate": generate, "steps": 3, "silent_retries": 0,
             "given": [{"stem": s, "sample_rate": 22050, "channels": 1, "frames": len(tone)} for s in given], **kw}
        sink = RecordingSink()
        fn, *args = run_job(b, Job("c", build_request(P.decode(P.encode(h, [tone] * len(given))), model, Limits()),
                                   sink), None)
        fn(*args)
        assert sink.final[0] == "done", sink.final
        return sink.final[1]

    assert done_of(["guitar", "piano"], ["bass", "drums"])["guidance"] == 2.5
    assert done_of(["guitar", "piano"], ["bass", "drums"], guidance=1.0)["guidance"] == 1.0
    assert done_of(["drums", "piano"], ["bass", "guitar"])["guidance"] == 1.0  # the manifest's own
