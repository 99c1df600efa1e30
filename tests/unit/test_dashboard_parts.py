"""The dashboard's pure parts: CSV rows, the session cookie, the SVG charts."""

from __future__ import annotations

from callfleet.dashboard.charts import histogram, outcome_bars
from callfleet.dashboard.session import SessionCodec


def test_the_session_cookie_hides_the_key_and_refuses_tampering() -> None:
    codec = SessionCodec("server secret")
    session = codec.new("cf_secret_key_value")
    cookie = codec.dump(session)
    assert "cf_secret_key_value" not in cookie
    assert codec.load(cookie) == session
    assert codec.load(cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")) is None
    assert SessionCodec("another secret").load(cookie) is None
    assert codec.load(None) is None and codec.load("garbage") is None


def test_the_csrf_token_must_match() -> None:
    codec = SessionCodec("s")
    session = codec.new("k")
    assert codec.csrf_ok(session, session.csrf)
    assert not codec.csrf_ok(session, None)
    assert not codec.csrf_ok(session, "")
    assert not codec.csrf_ok(session, session.csrf + "x")
    assert codec.new("k").csrf != session.csrf


def test_charts_are_svg_with_names_and_escape_their_labels() -> None:
    svg = outcome_bars({"completed": 3, "busy": 1, "<x>": 1})
    assert svg.startswith("<svg") and 'aria-label="Outcomes"' in svg
    assert "&lt;x&gt;" in svg and "<x>" not in svg
    assert svg.index("completed") < svg.index("busy")  # the biggest first
    assert "No outcomes yet" in outcome_bars({})
    hist = histogram([100.0, 150.0, 900.0], "Latency")
    assert hist.count("<rect") == 10 and "3 samples" in hist
    assert "No samples yet" in histogram([], "Latency")
    assert histogram([5.0, 5.0], "Same").count("<rect") == 10
