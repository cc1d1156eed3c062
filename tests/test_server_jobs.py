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

    def chunk(self, job, stem, offset, audio, window, final):
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
    w = Worker(b, Limits(max_queue=2))
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
