"""The daemon over real ZeroMQ sockets on loopback, with the tiny bundle."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import zmq

from plugin_bridge import protocol as P
from server_fixtures import (Client, HOP, SAMPLE_RATE, WINDOW, daemon, gen_header,  # noqa: F401
                             tiny_bundle, tone)
from server.audio import StreamRateConverter
from server.daemon import Daemon, DaemonConfig
from server.runtime import Bundle
from server.windowing import generate_region

WINDOW_S = WINDOW * HOP / SAMPLE_RATE
LONG = {"duration": 60.0, "steps": 1000}  # thousands of sampler steps: runs until cancelled


@pytest.fixture()
def client(daemon):  # noqa: F811
    c = Client(daemon.endpoint)
    yield c
    c.close()


def test_round_trip(client):
    hello = client.request({"type": "hello"})
    assert hello.type == "hello" and hello.header["protocol_version"] == P.PROTOCOL_VERSION
    assert hello.header["stems"] == ["bass", "drums", "guitar", "piano"]
    assert set(hello.header["providers"]) == {"encoder", "denoiser", "decoder"}
    assert client.request({"type": "ping", "token": "t1"}).header["token"] == "t1"
    region = {"tempo": 96.0, "meter": [3, 4], "start": {"bar": 5, "seconds": 7.5}}
    h, pcm = gen_header("take-1", {"bass": tone(1.3, 44100, channels=2)}, 44100, ["piano", "drums"],
                        seed=7, region=region)
    res = client.run_job(h, pcm)
    assert res.messages[0].type == "queued"
    done = res.final
    assert done.type == "done", done.header
    assert done.header["region"] == region and done.header["seed"] == 7
    assert done.header["stems"] == ["drums", "piano"]  # model order
    assert done.header["sample_rate"] == 44100 and done.header["frames"] == round(1.3 * 44100)
    for stage in ("queue", "prepare", "encode", "sample", "decode", "convert_rate", "total"):
        assert done.header["timings"][stage] >= 0
    assert done.header["timings"]["resample"] == done.header["timings"]["convert_rate"]  # its old name
    stems = res.stems()
    assert {k: len(v) for k, v in stems.items()} == {"drums": done.header["frames"], "piano": done.header["frames"]}
    assert all(np.isfinite(v).all() and np.abs(v).max() > 0 for v in stems.values())
    progress = res.of("progress")
    assert progress[-1].header["step"] == progress[-1].header["total"] == done.header["windows"] * 4


def test_schedule_is_offered_chosen_and_echoed(client):
    hello = client.request({"type": "hello"}).header
    assert hello["schedules"] == ["karras", "melody"] and hello["default_schedule"] == "karras"
    stems = {}
    for schedule in ("karras", "melody"):
        h, pcm = gen_header(f"s-{schedule}", {"bass": tone(0.5, 22050)}, 22050, ["drums"], seed=5,
                            schedule=schedule)
        res = client.run_job(h, pcm)
        assert res.final.type == "done" and res.final.header["schedule"] == schedule
        stems[schedule] = res.stems()["drums"]
    assert not np.allclose(stems["karras"], stems["melody"])  # the schedule reached the sampler


def test_resample_is_offered_chosen_and_echoed(client):
    hello = client.request({"type": "hello"}).header
    assert hello["max_resample"] == 8 and hello["default_resample"] == 1
    stems = {}
    for resample in (1, 3):
        h, pcm = gen_header(f"r{resample}", {"bass": tone(0.5, 22050)}, 22050, ["drums"], seed=5,
                            resample=resample)
        res = client.run_job(h, pcm)
        assert res.final.type == "done" and res.final.header["resample"] == resample
        assert res.of("progress")[-1].header["total"] == res.final.header["windows"] * 4  # steps, not takes
        stems[resample] = res.stems()["drums"]
    assert not np.allclose(stems[1], stems[3])


def test_a_request_given_the_bass_gets_the_daemons_passes_unless_it_asks(client, tiny_bundle):  # noqa: F811
    # given the bass, the daemon picks the passes (server.windowing.bass_given_sampler)
    # exactly as in-process windows do, and `done` says which; a request's own passes win
    BASS_GIVEN_RESAMPLE = Bundle.load(tiny_bundle).sampler_defaults.bass_given_resample  # the manifest's
    assert BASS_GIVEN_RESAMPLE == 2
    bass = tone(0.5, 22050)
    h, pcm = gen_header("bass-only", {"bass": bass}, 22050, ["guitar"], seed=4)
    res = client.run_job(h, pcm)
    assert res.final.type == "done" and res.final.header["resample"] == BASS_GIVEN_RESAMPLE
    b = Bundle.load(tiny_bundle)
    ref = np.concatenate([p.stems["guitar"] for p in generate_region(b, {"bass": bass}, ["guitar"], len(bass),
                                                                      seed=4, steps=4)])
    np.testing.assert_allclose(res.stems()["guitar"], ref, atol=1e-5)
    h, pcm = gen_header("bass-only-3", {"bass": bass}, 22050, ["guitar"], seed=4, resample=3)
    assert client.run_job(h, pcm).final.header["resample"] == 3
    h, pcm = gen_header("with-piano", {"bass": bass, "piano": tone(0.5, 22050, 330.0)}, 22050, ["guitar"], seed=4)
    assert client.run_job(h, pcm).final.header["resample"] == BASS_GIVEN_RESAMPLE
    h, pcm = gen_header("no-bass", {"piano": tone(0.5, 22050, 330.0)}, 22050, ["bass"], seed=4)
    assert client.run_job(h, pcm).final.header["resample"] == 1  # the tiny bundle's default


def test_reroll_reuses_the_given_stems_encoding(daemon, client):  # noqa: F811
    cache = daemon.worker.cache
    given = {"bass": tone(1.0, 44100), "piano": tone(1.0, 44100, 330.0)}
    h, pcm = gen_header("take-a", given, 44100, ["drums"], seed=1)
    assert client.run_job(h, pcm).final.type == "done"
    hits, misses = cache.hits, cache.misses
    assert misses > 0
    h, pcm = gen_header("take-b", given, 44100, ["drums"], seed=2)  # the musician asks for another take
    assert client.run_job(h, pcm).final.type == "done"
    assert cache.hits - hits == misses and cache.misses == misses


def test_two_and_a_half_windows_at_48k(client, tiny_bundle):  # noqa: F811
    """Stems stream window by window, in order, contiguous, of the exact length, and equal
    the same work done in-process."""
    n_in = int(2.5 * WINDOW_S * 48000)
    bass = tone(n_in / 48000, 48000, 110.0)
    h, pcm = gen_header("long", {"bass": bass}, 48000, ["drums", "guitar"], seed=11, output_sample_rate=48000)
    res = client.run_job(h, pcm)
    assert res.final.type == "done" and res.final.header["windows"] == 3
    chunks = res.of("chunk")
    assert [c.header["window"] for c in chunks] == sorted(c.header["window"] for c in chunks)
    assert [c.header["final"] for c in chunks if c.header["stem"] == "drums"] == [False, False, True]
    # the first window's audio arrives before the last window's sampling starts
    first_chunk = res.messages.index(chunks[0])
    last_window_progress = [i for i, m in enumerate(res.messages)
                            if m.type == "progress" and m.header["window"] == 2]
    assert first_chunk < last_window_progress[0]
    stems = res.stems()
    assert all(len(a) == n_in for a in stems.values())
    # reference: the same generation in-process
    b = Bundle.load(tiny_bundle)
    from server.audio import convert_rate
    given = {"bass": convert_rate(bass, 48000, SAMPLE_RATE)}
    n_model = round(n_in / 48000 * SAMPLE_RATE)
    pieces = list(generate_region(b, given, ["drums", "guitar"], n_model, seed=11, steps=4))
    rs = StreamRateConverter(SAMPLE_RATE, 48000, n_in)
    ref = np.concatenate([rs.push(p.stems["drums"], p.last) for p in pieces])
    np.testing.assert_allclose(stems["drums"], ref, atol=1e-5)
    # continuity: no jump at the window joins larger than the signal's own sample-to-sample steps
    d = np.abs(np.diff(stems["drums"]))
    assert d.max() < 20 * np.median(d) + 1e-6


def test_eight_clients_three_jobs_each(daemon):  # noqa: F811
    results: dict[int, dict[str, P.Message]] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        c = Client(daemon.endpoint, ctx=zmq.Context.instance())
        try:
            for j in range(3):  # the same job ids for every client: routing is by client
                h, pcm = gen_header(f"job{j}", {"drums": tone(0.5 + 0.1 * j, 32000, 100 + i)}, 32000,
                                    ["bass"], seed=100 * i + j)
                c.send(h, pcm)
            finals: dict[str, P.Message] = {}
            while len(finals) < 3:
                m = c.recv(30)
                if m.type in ("done", "error"):
                    finals[m.job_id] = m
            results[i] = finals
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(results) == list(range(8))
    for i, finals in results.items():
        for j in range(3):
            m = finals[f"job{j}"]
            assert m.type == "done" and m.header["seed"] == 100 * i + j
            assert m.header["frames"] == round((0.5 + 0.1 * j) * 32000)


def test_cancel_stops_within_a_step_and_daemon_goes_on(client):
    h, pcm = gen_header("slow", {}, 22050, ["bass", "drums"], **LONG)
    client.send(h, pcm)
    assert client.recv().type == "queued"
    while (first := client.recv()).type != "progress":
        pass
    client.send({"type": "cancel", "job_id": "slow"})
    t0 = time.monotonic()
    res = client.collect("slow", timeout=5)
    assert time.monotonic() - t0 < 2.0
    assert res.final.type == "error" and res.final.header["code"] == "cancelled"
    # The cancel may land between a step's progress message and its cancel check, so the
    # job can stop with no progress after the one seen above.
    last = max([first, *res.of("progress")], key=lambda m: m.header["step"])
    assert last.header["step"] < 200  # of 86000: stopped at once (exact step: test_server_jobs)
    assert client.request({"type": "cancel", "job_id": "slow"}).header["code"] == "unknown_job"
    assert client.request({"type": "ping"}).type == "pong"
    h, pcm = gen_header("after", {"bass": tone(0.4, 22050)}, 22050, ["piano"])
    assert client.run_job(h, pcm).final.type == "done"


def test_heartbeat_and_status_during_a_job(daemon, client):  # noqa: F811
    h, pcm = gen_header("hb", {}, 22050, ["guitar"], **LONG)
    client.send(h, pcm)
    beats, end = [], time.monotonic() + 3
    while not beats and time.monotonic() < end:
        if client.sock.poll(100):
            m = P.decode(client.sock.recv_multipart(), incoming="s2c")
            if m.type == "heartbeat":
                beats.append(m)
    assert beats and beats[0].header["jobs"][0]["job_id"] == "hb"
    st = client.request({"type": "status", "job_id": "hb"})
    while st.type != "status":
        st = client.recv()
    assert st.header["jobs"][0]["state"] == "running" and st.header["running"] == 1
    client.send({"type": "cancel", "job_id": "hb"})
    assert client.collect("hb").final.header["code"] == "cancelled"


def test_disconnect_mid_job_costs_only_that_job(daemon):  # noqa: F811
    gone = Client(daemon.endpoint)
    h, pcm = gen_header("orphan", {}, 22050, ["bass"], **LONG)
    gone.send(h, pcm)
    while gone.recv().type != "progress":
        pass
    gone.close()
    end = time.monotonic() + 5
    while daemon.worker.counts() != (0, 0) and time.monotonic() < end:
        time.sleep(0.05)
    assert daemon.worker.counts() == (0, 0), "the orphaned job was not cancelled"
    other = Client(daemon.endpoint)
    try:
        h, pcm = gen_header("next", {"bass": tone(0.3, 22050)}, 22050, ["drums"])
        assert other.run_job(h, pcm).final.type == "done"
    finally:
        other.close()


def _bad_inputs():
    ok = tone(0.3, 22050)
    nan = ok.copy()
    nan[10] = np.nan
    inf = ok.copy()
    inf[-1] = np.inf
    g = lambda jid, given, gen, **kw: gen_header(jid, given, 22050, gen, **kw)  # noqa: E731
    h_ok, _ = g("size", {"bass": ok}, ["drums"])
    yield "empty header frame", [b""], "bad_json"
    yield "not json", [b"{not json"], "bad_json"
    yield "json not an object", [b'"hello"'], "bad_json"
    yield "lacks type", [b'{"v": 1}'], "missing_field"
    yield "lacks fields", P.encode({"type": "generate", "job_id": "x"}), "missing_field"
    yield "pcm byte length", P.encode(h_ok, [ok[:-1]]), "pcm_size_mismatch"
    yield "pcm odd bytes", P.encode(h_ok)[:1] + [b"\x00" * 5], "pcm_size_mismatch"
    yield "missing pcm frame", P.encode(h_ok), "pcm_frame_count"
    yield "nan", P.encode(*g("nan", {"bass": nan}, ["drums"])), "non_finite"
    yield "inf", P.encode(*g("inf", {"bass": inf}, ["drums"])), "non_finite"
    yield "empty region", P.encode(*g("empty", {"bass": ok[:0]}, ["drums"])), "empty_region"
    yield "zero duration", P.encode(*g("zero", {}, ["drums"], duration=0)), "empty_region"
    yield "silent region", P.encode(*g("silent", {"bass": ok * 0, "piano": ok * 0}, ["drums"])), "silent_region"
    yield "too long", P.encode(*g("long", {}, ["drums"], duration=121.0)), "region_too_long"
    yield "unknown stem", P.encode(*g("us", {"bass": ok}, ["kazoo"])), "unknown_stem"
    yield "unknown given stem", P.encode(*g("ug", {"vocals": ok}, ["bass"])), "unknown_stem"
    yield "given and requested", P.encode(*g("gr", {"bass": ok}, ["bass", "drums"])), "stem_conflict"
    yield "nothing requested", P.encode(*g("nr", {"bass": ok}, [])), "nothing_requested"
    yield "input rate low", P.encode(*gen_header("rl", {"bass": ok}, 7999, ["drums"])), "bad_sample_rate"
    yield "input rate high", P.encode(*gen_header("rh", {"bass": ok}, 192001, ["drums"])), "bad_sample_rate"
    yield "output rate", P.encode(*g("ro", {"bass": ok}, ["drums"], output_sample_rate=250000)), "bad_sample_rate"
    yield "over size limit", P.encode(*g("big", {"bass": np.ones(2_300_000, np.float32)}, ["drums"])), "too_large"
    third = np.ones(800_000, np.float32)  # 3.2 MB each: every frame under the 8 MiB limit, the sum over it
    yield "over size limit in three frames", P.encode(*g("big3", {"bass": third, "piano": third, "guitar": third},
                                                          ["drums"])), "too_large"
    yield "unknown type", P.encode({"type": "teleport"}), "unknown_type"
    yield "newer version", [b'{"type": "ping", "v": 99}'], "unsupported_version"
    yield "bad steps", P.encode(*g("bs", {"bass": ok}, ["drums"], steps=0)), "bad_field"
    yield "bad sampler", P.encode(*g("bsa", {"bass": ok}, ["drums"], sampler="ddim")), "bad_field"
    yield "bad schedule", P.encode(*g("bsc", {"bass": ok}, ["drums"], schedule="cosine")), "bad_field"
    yield "resample 0", P.encode(*g("rs0", {"bass": ok}, ["drums"], resample=0)), "bad_field"
    yield "resample 9", P.encode(*g("rs9", {"bass": ok}, ["drums"], resample=9)), "bad_field"
    yield "steps x resample", P.encode(*g("rsx", {"bass": ok}, ["drums"], steps=1000, resample=3)), "bad_field"
    yield "bad level", P.encode(*g("lv", {"bass": ok}, ["drums"], level="loud")), "bad_field"
    yield "level not text", P.encode(*g("lv2", {"bass": ok}, ["drums"], level=[1])), "bad_field"
    yield "unknown job", P.encode({"type": "cancel", "job_id": "nope"}), "unknown_job"


@pytest.mark.parametrize("name, frames, code", list(_bad_inputs()), ids=[b[0] for b in _bad_inputs()])
def test_bad_input_gets_error_and_daemon_stays_up(client, name, frames, code):
    client.send_raw(frames)
    m = client.recv()
    assert m.type == "error" and m.header["code"] == code, (name, m.header)
    assert m.header["message"]
    assert client.request({"type": "ping"}).type == "pong"


def test_after_all_bad_inputs_a_valid_job_is_correct(client):
    for _, frames, _ in _bad_inputs():
        client.send_raw(frames)
        assert client.recv().type == "error"
    h, pcm = gen_header("good", {"bass": tone(0.5, 22050)}, 22050, ["drums"], seed=2)
    a = client.run_job(h, pcm)
    h["job_id"] = "good2"
    b = client.run_job(h, pcm)
    assert a.final.type == b.final.type == "done"
    np.testing.assert_array_equal(a.stems()["drums"], b.stems()["drums"])  # same seed, same stems


def test_duplicate_job_id(client):
    h, pcm = gen_header("dup", {}, 22050, ["bass"], **LONG)
    client.send(h, pcm)
    assert client.recv().type == "queued"
    m = client.request(h, pcm)
    while m.type != "error":
        m = client.recv()
    assert m.header["code"] == "duplicate_job" and m.job_id == "dup"
    client.send({"type": "cancel", "job_id": "dup"})
    assert client.collect("dup").final.header["code"] == "cancelled"


def test_remote_bind_needs_allow_remote_and_curve(tiny_bundle):  # noqa: F811
    with pytest.raises(ValueError, match="allow-remote"):
        Daemon(DaemonConfig(bundle=tiny_bundle, zmq="tcp://0.0.0.0:0"))
    with pytest.raises(ValueError, match="Curve"):
        Daemon(DaemonConfig(bundle=tiny_bundle, zmq="tcp://0.0.0.0:0", allow_remote=True))


def test_curve_encrypted_daemon(tiny_bundle, tmp_path):  # noqa: F811
    allowed, server_pub, server_sec, client_pub, client_sec = _curve_folders(tmp_path)
    cfg = DaemonConfig(bundle=tiny_bundle, zmq="tcp://127.0.0.1:0", allow_remote=True,
                       curve_secret_key=server_sec, curve_clients=allowed)
    with Daemon(cfg) as d:
        good = Client(d.endpoint, curve=(server_pub, client_pub, client_sec))
        plain = Client(d.endpoint)
        try:
            assert good.request({"type": "ping"}).type == "pong"
            # Without the keys the handshake fails. Depending on timing, the DEALER drops its
            # pipe (a send would block: no peer) or queues the message; either way no answer.
            try:
                plain.sock.send_multipart(P.encode({"type": "ping"}), zmq.NOBLOCK)
            except zmq.Again:
                pass
            with pytest.raises(TimeoutError):
                plain.recv(0.5)
        finally:
            good.close()
            plain.close()


# ----------------------------------------------------------------------------- issue 14

def _generate_text(job_id: str, extra: str) -> list[bytes]:
    """A `generate` header written as JSON text, so literals like 1e400 reach the daemon."""
    return [('{"type": "generate", "v": 1, "job_id": "%s", "given": [], "generate": ["bass"], '
             '"duration": 0.3, "steps": 2%s}' % (job_id, extra)).encode()]


def test_a_region_holding_1e400_ends_with_an_error(client):
    """Fault 1: the job used to be queued and stream chunks, then never end (its `done`
    could not be serialised). Now it is refused at once, naming the field, and the
    client gets exactly one terminal message for the job id."""
    client.send_raw(_generate_text("inf-region", ', "region": {"tempo": 1e400}'))
    m = client.recv(10)
    assert m.type == "error" and m.job_id == "inf-region", m.header
    assert m.header["code"] == "bad_field" and "region.tempo" in m.header["message"]
    assert client.request({"type": "ping"}).type == "pong"


@pytest.mark.parametrize("frames, field", [
    ([b'{"type": "ping", "v": 1, "token": 1e400}'], "token"),
    (_generate_text("huge", ', "duration": %d' % 2 ** 70), "duration"),
    (_generate_text("huge-seed", ', "seed": %d' % 2 ** 70), "seed"),
    (_generate_text("huge-steps", ', "steps": %d' % 2 ** 70), "steps"),
    (_generate_text("huge-guidance", ', "guidance": %d' % 2 ** 70), "guidance"),
    (_generate_text("inf-guidance", ', "guidance": 1e400'), "guidance"),
])
def test_overflowing_numbers_are_bad_field_not_internal(client, frames, field):
    """Fault 2: these were `internal` errors."""
    client.send_raw(frames)
    m = client.recv(10)
    assert m.type == "error" and m.header["code"] == "bad_field", m.header
    assert field in m.header["message"]


def test_request_validation_never_raises_on_a_huge_integer():
    """`build_request` called directly (not through the wire decoder, which maps overflowing
    literals first): an int past int64 is a clear ProtocolError, never numpy's TypeError."""
    from server.requests import Limits, ModelInfo, build_request

    model = ModelInfo(("bass", "drums", "guitar", "piano"), 22050, ("euler",), 4, "euler")
    for extra in ({"duration": 2 ** 70}, {"duration": 1.0, "guidance": 2 ** 70},
                  {"duration": 1.0, "redo": {"stem": "bass", "start": 0, "end": 2 ** 70}}):
        h = {"type": "generate", "job_id": "j", "given": [], "generate": ["bass"], **extra}
        with pytest.raises(P.ProtocolError):
            build_request(P.Message("generate", h, []), model, Limits())


def test_one_client_cannot_fill_the_queue(tiny_bundle):  # noqa: F811
    """Fault 6: a client may hold at most `max_queue_per_client` waiting jobs (default
    max_queue // 4), so another client still gets in."""
    from server.requests import Limits
    cfg = DaemonConfig(bundle=tiny_bundle, zmq="tcp://127.0.0.1:0", heartbeat_s=0.2,
                       limits=Limits(max_queue=8, max_steps=2000))
    with Daemon(cfg) as d:
        greedy, polite = Client(d.endpoint), Client(d.endpoint)
        try:
            replies = []
            for i in range(9):  # 1 runs, then up to 8 would wait
                h, pcm = gen_header(f"g{i}", {}, 22050, ["bass"], **LONG)
                greedy.send(h, pcm)
                replies.append(_answer(greedy, f"g{i}"))
                if i == 0:  # the first job leaves the queue before the others arrive
                    while not (m := greedy.recv(10)).type == "progress":
                        pass
            codes = [m.type if m.type == "queued" else m.header["code"] for m in replies]
            # 1 running + 2 waiting, then refusals (a job that ends meanwhile frees one place:
            # on an idle machine the tiny model may finish one before all nine are sent).
            assert codes[:4] == ["queued"] * 3 + ["queue_full"], codes
            assert codes.count("queue_full") >= 4 and codes.count("queued") <= 5, codes
            assert all("per client" in m.header["message"] for m in replies if m.type == "error")
            h, pcm = gen_header("p0", {}, 22050, ["bass"], **LONG)
            polite.send(h, pcm)
            m = _answer(polite, "p0")
            assert m.type == "queued" and 1 <= m.header["position"] <= 3, m.header
        finally:
            greedy.close()
            polite.close()


def _answer(client: Client, job_id: str) -> P.Message:
    """The `queued` or `error` answer to a `generate` (progress of earlier jobs skipped)."""
    while True:
        m = client.recv(10)
        if m.type in ("queued", "error") and m.job_id == job_id:
            return m


def _ipv6_loopback() -> bool:
    import socket
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_ipv6_loopback_is_served(tiny_bundle):  # noqa: F811
    """Fault 7: `tcp://[::1]:port` crashed at start-up with a traceback."""
    cfg = DaemonConfig(bundle=tiny_bundle, zmq="tcp://[::1]:0")
    with Daemon(cfg) as d:
        assert d.endpoint.startswith("tcp://[::1]:")
        c = Client(d.endpoint, ipv6=True)
        try:
            assert c.request({"type": "ping", "token": 6}).header["token"] == 6
        finally:
            c.close()


def test_an_endpoint_that_cannot_be_bound_is_a_clear_value_error(tiny_bundle):  # noqa: F811
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match="cannot bind"):
            Daemon(DaemonConfig(bundle=tiny_bundle, zmq=f"tcp://127.0.0.1:{port}"))


def _curve_folders(tmp_path):
    """A server certificate and one allowed client certificate, as `msldm keys` writes them."""
    import zmq.auth
    allowed = tmp_path / "clients"
    allowed.mkdir()
    server_pub_file, server_sec_file = zmq.auth.create_certificates(str(tmp_path), "server")
    client_pub_file, client_sec_file = zmq.auth.create_certificates(str(tmp_path), "client")
    import shutil
    shutil.copy(client_pub_file, allowed)
    server_pub, server_sec = zmq.auth.load_certificate(server_sec_file)
    client_pub, client_sec = zmq.auth.load_certificate(client_sec_file)
    return allowed, server_pub, server_sec, client_pub, client_sec


def test_curve_serves_only_allowed_client_keys(tiny_bundle, tmp_path):  # noqa: F811
    """Fault 4: a never-seen client keypair used to be served."""
    allowed, server_pub, server_sec, client_pub, client_sec = _curve_folders(tmp_path)
    cfg = DaemonConfig(bundle=tiny_bundle, zmq="tcp://127.0.0.1:0", allow_remote=True,
                       curve_secret_key=server_sec, curve_clients=allowed)
    stranger_pub, stranger_sec = zmq.curve_keypair()
    with Daemon(cfg) as d:
        good = Client(d.endpoint, curve=(server_pub, client_pub, client_sec))
        stranger = Client(d.endpoint, curve=(server_pub, stranger_pub, stranger_sec))
        try:
            assert good.request({"type": "ping"}).type == "pong"
            try:
                stranger.sock.send_multipart(P.encode({"type": "ping"}), zmq.NOBLOCK)
            except zmq.Again:
                pass
            with pytest.raises(TimeoutError):
                stranger.recv(1.0)
            assert good.request({"type": "ping"}).type == "pong"
        finally:
            good.close()
            stranger.close()


def test_curve_without_a_client_key_folder_is_refused(tiny_bundle):  # noqa: F811
    _, server_sec = zmq.curve_keypair()
    with pytest.raises(ValueError, match="curve-clients"):
        Daemon(DaemonConfig(bundle=tiny_bundle, zmq="tcp://0.0.0.0:0", allow_remote=True,
                            curve_secret_key=server_sec))


@pytest.mark.parametrize("job_id", ["", "x" * 129, 7])
def test_an_error_about_an_invalid_job_id_carries_none(client, job_id):
    """Found by the fuzz run of issue 14: errors echoed an empty or over-long job id, so a
    strict client could not even decode the reply."""
    client.send_raw([json.dumps({"type": "generate", "v": 1, "job_id": job_id}).encode()])
    m = client.recv(10)  # decoded strictly, as a client written from the document would
    assert m.type == "error" and "job_id" not in m.header and m.header["code"] in ("missing_field", "bad_field")


@pytest.mark.parametrize("tempo,meter,seconds,bars", [(120.0, [4, 4], 1.3, 1), (90.0, [3, 4], 4.3, 2),
                                                      (180.0, [6, 8], 2.9, 1)])
def test_stems_cut_to_the_bar_have_the_length_tempo_and_meter_give(client, tempo, meter, seconds, bars):
    # length "bars": the region's length rounded to the nearest whole bar; every stem then
    # has exactly that many samples at the output rate, from the region start.
    h, pcm = gen_header("bars-1", {"bass": tone(seconds, 44100)}, 44100, ["drums"], seed=1,
                        region={"tempo": tempo, "meter": meter}, length="bars", output_sample_rate=48000)
    done = client.run_job(h, pcm).final
    assert done.type == "done", done.header
    bar_s = meter[0] * 60.0 / tempo
    assert done.header["frames"] == round(bars * bar_s * 48000)
    h2, pcm2 = gen_header("bars-2", {"bass": tone(seconds, 44100)}, 44100, ["drums"], seed=1,
                          region={"tempo": tempo, "meter": meter}, output_sample_rate=48000)
    assert client.run_job(h2, pcm2).final.header["frames"] == round(seconds * 48000)  # "region": as given


@pytest.mark.parametrize("extra,code", [({"length": "bars"}, "missing_field"),
                                        ({"length": "beats", "region": {"tempo": 120}}, "bad_field"),
                                        ({"length": "bars", "region": {"tempo": 0}}, "bad_field"),
                                        ({"length": "bars", "region": {"tempo": 120, "meter": [4]}}, "bad_field")])
def test_bad_bar_lengths_are_refused_clearly(client, extra, code):
    h, pcm = gen_header("bars-bad", {"bass": tone(1.0, 44100)}, 44100, ["drums"], **extra)
    final = client.run_job(h, pcm).final
    assert final.type == "error" and final.header["code"] == code, final.header


# ----------------------------------------------------------------------------- takes and redo

def _count_encodes(monkeypatch) -> list[tuple[int, ...]]:
    """Shapes of every encoder call the daemon makes from now on."""
    calls: list[tuple[int, ...]] = []
    real = Bundle.encode

    def encode(self, audio):
        calls.append(tuple(audio.shape))
        return real(self, audio)
    monkeypatch.setattr(Bundle, "encode", encode)
    return calls


@pytest.mark.parametrize("seconds", [0.9, 3.0])  # one window; several windows
def test_four_takes_in_one_request_encode_the_given_stems_once(client, monkeypatch, seconds):
    rng = np.random.default_rng(int(seconds * 10))
    given = {"bass": (0.2 * rng.standard_normal(int(seconds * 48000))).astype(np.float32),
             "piano": tone(seconds, 48000, 330.0)}
    calls = _count_encodes(monkeypatch)
    h, pcm = gen_header("takes-4", given, 48000, ["drums", "guitar"], seed=5, takes=4)
    res = client.run_job(h, pcm)
    done = res.final
    assert done.type == "done", done.header
    assert [t["seed"] for t in done.header["takes"]] == [5, 6, 7, 8] and done.header["seed"] == 5
    # the given stems were encoded once per window for all four takes, two rows per call
    assert len(calls) == done.header["windows"] and all(c[0] == 2 for c in calls), calls
    takes = [res.stems(t) for t in range(4)]
    for stem in ("drums", "guitar"):
        assert all(len(t[stem]) == done.header["frames"] == len(given["bass"]) for t in takes)
        for i in range(4):
            for j in range(i + 1, 4):
                assert np.abs(takes[i][stem] - takes[j][stem]).max() > 1e-3, (stem, i, j)
    assert {m.header["take"] for m in res.of("chunk")} == {0, 1, 2, 3}
    # every take is scored against the given stems and ranked, the best first
    entries = done.header["takes"]
    assert sorted(e["rank"] for e in entries) == [1, 2, 3, 4]
    by_rank = sorted(entries, key=lambda e: e["rank"])
    assert all(a["fit"] >= b["fit"] for a, b in zip(by_rank, by_rank[1:]))
    for e in entries:
        assert set(e["stem_fit"]) == {"drums", "guitar"}
        assert e["fit"] == pytest.approx(np.mean([f["score"] for f in e["stem_fit"].values()]), abs=1e-3)
        assert e["stem_fit"]["guitar"]["harmony"] is not None  # a pitched stem (piano, bass) is given
        assert e["stem_fit"]["drums"]["harmony"] is None  # drums: rhythm only
    assert done.header["timings"]["rank"] > 0.0
    # take 2 is what a one-take request with its seed makes; a one-take job is not scored
    h1, pcm1 = gen_header("takes-1", given, 48000, ["drums", "guitar"], seed=7)
    res1 = client.run_job(h1, pcm1)
    alone = res1.stems()
    for stem in ("drums", "guitar"):
        np.testing.assert_allclose(takes[2][stem], alone[stem], atol=1e-4)
    assert "fit" not in res1.final.header["takes"][0] and res1.final.header["timings"]["rank"] == 0.0


def test_a_ranking_that_fails_leaves_the_takes_and_done_intact(client, monkeypatch):
    import server.jobs

    class Broken:
        def __init__(self, *a, **k):
            raise RuntimeError("scorer bug")

    monkeypatch.setattr(server.jobs, "Scorer", Broken)
    given = {"piano": tone(1.0, 48000, 330.0)}
    h, pcm = gen_header("takes-broken", given, 48000, ["bass"], seed=1, takes=2)
    res = client.run_job(h, pcm)
    assert res.final.type == "done", res.final.header
    assert [t["seed"] for t in res.final.header["takes"]] == [1, 2]
    assert all("rank" not in t for t in res.final.header["takes"])
    assert all(len(res.stems(t)["bass"]) == 48000 for t in (0, 1))


def test_takes_of_one_stem_made_from_nothing_are_not_ranked(client):
    """Nothing given and one stem made: there is nothing to judge a take against, so `done`
    carries no fit rather than a tie of zeros."""
    h, pcm = gen_header("alone", {}, 48000, ["drums"], seed=1, takes=2, duration=1.0)
    res = client.run_job(h, pcm)
    assert res.final.type == "done", res.final.header
    assert all("rank" not in t and "fit" not in t for t in res.final.header["takes"])


def test_a_redo_keeps_the_stem_outside_the_range_bit_exact_and_changes_the_inside(client):
    rate, seconds = 48000, 3.0
    drums = (0.2 * np.random.default_rng(3).standard_normal(int(seconds * rate))).astype(np.float32)
    h, pcm = gen_header("first", {"drums": drums}, rate, ["bass"], seed=1)
    bass = client.run_job(h, pcm).stems()["bass"]
    h, pcm = gen_header("redo", {"drums": drums, "bass": bass}, rate, ["bass"], seed=2, takes=2,
                        redo={"stem": "bass", "start": 1.0, "end": 2.0})
    res = client.run_job(h, pcm)
    assert res.final.type == "done", res.final.header
    assert res.final.header["redo"] == {"stem": "bass", "start": 1.0, "end": 2.0}
    # the two redone takes are ranked too, against the other given stem over the redo's span
    assert sorted(t["rank"] for t in res.final.header["takes"]) == [1, 2]
    assert all(set(t["stem_fit"]) == {"bass"} for t in res.final.header["takes"])
    a, b = rate, 2 * rate
    for take in (0, 1):
        out = res.stems(take)["bass"]
        assert len(out) == len(bass)
        assert np.array_equal(out[:a], bass[:a]) and np.array_equal(out[b:], bass[b:])
        inside = slice(a + rate // 10, b - rate // 10)
        assert np.abs(out[inside] - bass[inside]).max() > 1e-3
    assert np.abs(res.stems(0)["bass"][a:b] - res.stems(1)["bass"][a:b]).max() > 1e-3


def test_a_redo_of_bars_maps_bar_numbers_to_the_region(client):
    # 4/4 at 120 BPM: 2 s bars; the region starts at bar 5, so bar 6 is [2, 4) s
    rate = 44100
    drums, bass = tone(6.0, rate, 110.0), tone(6.0, rate, 55.0)
    h, pcm = gen_header("redo-bars", {"drums": drums, "bass": bass}, rate, ["bass"], seed=3,
                        region={"tempo": 120, "meter": [4, 4], "start_bar": 5}, redo={"stem": "bass", "bars": [6, 6]})
    res = client.run_job(h, pcm)
    assert res.final.header["redo"] == {"stem": "bass", "start": 2.0, "end": 4.0}, res.final.header
    out = res.stems()["bass"]
    assert np.array_equal(out[:2 * rate], bass[:2 * rate]) and np.array_equal(out[4 * rate:], bass[4 * rate:])
    assert not np.array_equal(out[2 * rate:4 * rate], bass[2 * rate:4 * rate])


@pytest.mark.parametrize("extra,code,words", [
    ({"takes": 0}, "bad_field", "takes"), ({"takes": 9}, "bad_field", "takes"),
    ({"takes": True}, "bad_field", "takes"), ({"takes": 2, "seed": 2 ** 63 - 1}, "bad_field", "seed"),
    ({"silent_retries": -1}, "bad_field", "silent_retries"), ({"silent_retries": 5}, "bad_field", "silent_retries"),
    ({"silent_retries": 1.5}, "bad_field", "silent_retries"), ({"silent_retries": False}, "bad_field", "silent_retries"),
    ({"guidance": -0.5}, "bad_field", "guidance"), ({"guidance": 9}, "bad_field", "guidance"),
    ({"guidance": "3"}, "bad_field", "guidance"), ({"guidance": True}, "bad_field", "guidance"),
    ({"candidates": 0}, "bad_field", "candidates"), ({"candidates": 9}, "bad_field", "candidates"),
    ({"candidates": 2.0}, "bad_field", "candidates"), ({"candidates": True}, "bad_field", "candidates"),
    ({"redo": {"stem": "guitar", "start": 0, "end": 1}}, "bad_field", "given"),
    ({"redo": {"stem": "bass", "start": 0}}, "missing_field", "end"),
    ({"redo": {"stem": "bass", "start": 0.5, "end": 0.2}}, "bad_field", "start < end"),
    ({"redo": {"stem": "bass", "start": 0.5, "end": 9.0}}, "bad_field", "region"),
    ({"redo": {"stem": "bass", "bars": [1, 1]}}, "missing_field", "tempo"),
    ({"redo": {"stem": "bass", "bars": [3, 4]}, "region": {"tempo": 120}}, "bad_field", "outside"),
    ({"redo": {"stem": "bass", "start": 0, "end": 1}, "generate": ["bass", "guitar"]}, "bad_field", "generate"),
    ({"redo": {"stem": "bass", "start": 0, "end": 1}, "output_sample_rate": 48000}, "bad_field", "rate"),
])
def test_bad_takes_and_redo_requests_are_refused_clearly(client, extra, code, words):
    given = {"bass": tone(2.0, 44100), "drums": tone(2.0, 44100, 110.0)}
    h, pcm = gen_header("bad-redo", given, 44100, ["bass"] if "redo" in extra else ["guitar"])
    h.update(extra)
    final = client.run_job(h, pcm).final
    assert final.type == "error" and final.header["code"] == code, final.header
    assert words in final.header["message"], final.header["message"]


def test_done_says_how_many_windows_were_sampled_again_for_a_silent_stem(client, monkeypatch):
    # the tiny model's drums come out digital silence: every window is sampled again
    # silent_retries times, and done says so; 0 turns it off
    from server.runtime import Bundle

    real = Bundle.decode

    def decode(self, z):
        return real(self, z) * 0.0

    monkeypatch.setattr(Bundle, "decode", decode)
    given = {"bass": tone(3.0, 44100)}
    for retries, takes in ((0, 1), (2, 1), (1, 2)):
        h, pcm = gen_header(f"silent-{retries}", given, 44100, ["drums"], silent_retries=retries, takes=takes)
        done = client.run_job(h, pcm).final
        assert done.type == "done", done.header
        assert done.header["silent_retries"] == retries
        assert done.header["silent_rerolls"] == retries * takes * done.header["windows"], done.header
        assert [t["silent_rerolls"] for t in done.header["takes"]] == [retries * done.header["windows"]] * takes
    h, pcm = gen_header("silent-default", given, 44100, ["drums"])
    assert client.run_job(h, pcm).final.header["silent_retries"] == 2  # the daemon's default, echoed


def test_done_says_which_takes_had_windows_turned_down_after_every_sampling_burst(client, monkeypatch):
    from server.runtime import Bundle

    def decode(self, z):  # every stem a full-scale square wave: blown at every attempt
        n = z.shape[-1] * self.D
        return np.broadcast_to(np.sign(np.sin(0.05 * np.arange(n)) + 1e-3), (len(z), 1, n)).astype(np.float32)

    monkeypatch.setattr(Bundle, "decode", decode)
    h, pcm = gen_header("blown", {"bass": tone(3.0, 44100)}, 44100, ["drums"], silent_retries=1, takes=2)
    job = client.run_job(h, pcm)
    done = job.final
    assert done.type == "done", done.header
    w = done.header["windows"]
    assert done.header["tamed_windows"] == 2 * w and [t["tamed_windows"] for t in done.header["takes"]] == [w, w]
    chunks = job.of("chunk")
    assert chunks and max(np.abs(P.pcm_from_bytes(c.pcm[0], c.header["channels"])).max() for c in chunks) < 0.9
    h, pcm = gen_header("fine", {"bass": tone(3.0, 44100)}, 44100, ["drums"])
    monkeypatch.undo()
    assert client.run_job(h, pcm).final.header["tamed_windows"] == 0


def test_guidance_is_the_bundles_unless_asked_and_changes_the_generated_stems(client):
    given = {"drums": tone(2.0, 44100, 110.0)}
    hello = client.request({"type": "hello"}).header
    assert hello["max_guidance"] == 8.0 and hello["default_guidance"] == 1.0  # the handmade bundle: unguided
    out = {}
    for g in (None, 1.0, 3.0):
        extra = {} if g is None else {"guidance": g}
        h, pcm = gen_header(f"guid-{g}", given, 44100, ["bass"], seed=5, **extra)
        res = client.run_job(h, pcm)
        assert res.final.type == "done" and res.final.header["guidance"] == (1.0 if g is None else g), res.final.header
        out[g] = res.stems()["bass"]
    assert np.array_equal(out[None], out[1.0]) and not np.array_equal(out[1.0], out[3.0])
    # with nothing given there is nothing to follow: total generation (its windows after the
    # first continue the previous one by imputation in time) is the same at any guidance
    total = {}
    for g in (1.0, 3.0):
        h, pcm = gen_header(f"guid-total-{g}", {}, 22050, ["bass"], seed=5, duration=3.0, guidance=g)
        res = client.run_job(h, pcm)
        assert res.final.type == "done" and res.final.header["windows"] > 1, res.final.header
        total[g] = res.stems()["bass"]
    assert np.array_equal(total[1.0], total[3.0])


def test_candidates_are_the_bundles_unless_asked_and_sampled_only_given_bass_and_drums(client):
    hello = client.request({"type": "hello"}).header
    assert hello["max_candidates"] == 8 and hello["default_candidates"] == 2  # the handmade bundle's manifest
    given = {"bass": tone(2.0, 44100, 55.0), "drums": tone(2.0, 44100, 110.0)}
    out = {}
    for c in (None, 1, 2):
        extra = {} if c is None else {"candidates": c}
        h, pcm = gen_header(f"cand-{c}", given, 44100, ["guitar"], seed=5, **extra)
        res = client.run_job(h, pcm)
        assert res.final.type == "done" and res.final.header["candidates"] == (2 if c is None else c), res.final.header
        out[c] = res.stems()["guitar"]
    assert np.array_equal(out[None], out[2]) and not np.array_equal(out[1], out[2])
    # the bass and piano given: one candidate sampled, whatever was asked
    h, pcm = gen_header("cand-bp", {"bass": given["bass"], "piano": tone(2.0, 44100, 220.0)}, 44100, ["guitar"],
                        seed=5, candidates=3)
    res = client.run_job(h, pcm)
    assert res.final.type == "done" and res.final.header["candidates"] == 1, res.final.header


def test_a_stereo_stem_cannot_be_redone(client):
    given = {"bass": tone(1.0, 44100, channels=2), "drums": tone(1.0, 44100)}
    h, pcm = gen_header("redo-st", given, 44100, ["bass"], redo={"stem": "bass", "start": 0.1, "end": 0.5})
    final = client.run_job(h, pcm).final
    assert final.header["code"] == "bad_field" and "mono" in final.header["message"]


def test_a_bundle_with_a_balance_table_balances_unless_asked_for_the_models_level(tiny_bundle, tmp_path):  # noqa: F811
    import json
    import shutil
    root = tmp_path / "balanced"
    shutil.copytree(tiny_bundle, root)
    m = json.loads((root / "manifest.json").read_text())
    m["level_balance"] = {"source": "test", "offsets_db": {"drums": {"bass": -6.0}}}
    (root / "manifest.json").write_text(json.dumps(m))
    with Daemon(DaemonConfig(bundle=root, zmq="tcp://127.0.0.1:0", heartbeat_s=0.2)) as d:
        c = Client(d.endpoint)
        try:
            out = {}
            for level in ("balance", "model", None):
                kw = {} if level is None else {"level": level}
                h, pcm = gen_header(f"lv-{level}", {"bass": tone(1.0, 22050)}, 22050, ["drums"], seed=3, takes=2, **kw)
                res = c.run_job(h, pcm)
                done = res.final.header
                assert res.final.type == "done", done
                out[level] = done
            assert out["balance"]["level"] == "balance" == out[None]["level"]  # the default
            gains = [t["level_gain_db"] for t in out["balance"]["takes"]]
            # one gain per window (a 1 s region: one window)
            assert all(set(g) == {"drums"} and len(g["drums"]) == out["balance"]["windows"] and g["drums"][0] != 0
                       for g in gains), gains
            assert out["model"]["level"] == "model" and all(t["level_gain_db"] == {} for t in out["model"]["takes"])
        finally:
            c.close()
