"""`python -m server.fuzz` against a real daemon (a short run; the full one is 10,000 messages)."""

from __future__ import annotations

from server_fixtures import tiny_bundle  # noqa: F401
from server.fuzz import run


def test_a_short_fuzz_run_gets_an_answer_to_everything_and_no_internal_error(tiny_bundle):  # noqa: F811
    report = run(400, tiny_bundle, seed=1)
    assert report["daemon_alive"] and report["unanswered"] == 0, report
    assert report["internal"] == 0 and report["logged_tracebacks"] == 0, report
    assert not [k for k in report["answers"] if k.startswith("invalid reply")], report
    assert report["answers"]["bad_field"] > 0 and report["answers"]["bad_json"] > 0
    assert report["rss_kib_after"] > 0
