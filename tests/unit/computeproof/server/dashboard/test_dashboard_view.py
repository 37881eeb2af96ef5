"""Tests of computeproof/server/dashboard/view.py and charts.py: hostile text made visible,
GPU figures over the run from the agent's own payloads."""

from __future__ import annotations

import base64
import html

from demo import DemoJob, agent_payloads

from computeproof.server.dashboard import view
from computeproof.server.dashboard.charts import step_chart


def test_visible_escapes_what_a_page_would_hide() -> None:
    assert view.visible("plain é ü 漢字") == "plain é ü 漢字"
    assert view.visible("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert view.visible("\x1b[31mred") == "\\x1b[31mred"
    # bidirectional override, zero-width space, line separator, a lone surrogate
    assert view.visible("x\u202ey\u200bz\u2028") == "x\\u202ey\\u200bz\\u2028"
    assert view.visible("\udcff") == "\\udcff"
    assert view.visible("\U000e0001") == "\\U000e0001"  # a tag character (format)


def test_display_text_of_event_values() -> None:
    raw = b"bad\xffname\n"
    assert (
        view.display_text({"non_utf8": base64.b64encode(raw).decode()})
        == "bad\\xffname\\n [not UTF-8]"
    )
    assert view.display_text({"non_utf8": "***"}).startswith("(malformed non-UTF-8 value)")
    assert view.display_text({"sha256_commitment": "ab" * 32}) == "[private]"
    assert view.display_text(["node1", "node2"]) == "node1, node2"
    assert view.display_text(None) == "" and view.display_text(True) == "true"
    assert view.display_text("x" * 50, limit=10) == "x" * 9 + "\u2026"
    assert view.display_text({"a": "\u202e"}) == '{"a": "\\u202e"}'


def test_json_text_stays_json_with_hidden_characters_escaped() -> None:
    import json

    value = {"name": "a\u202eb\u2028c", "n": 1, "é": "ü"}
    text = view.json_text(value)
    assert "\u202e" not in text and "\u2028" not in text and "ü" in text
    assert json.loads(text) == value


def test_status_classes() -> None:
    assert view.status_class("RUNNING") == "running"
    assert view.status_class("CANCELLED by 1000") == "cancelled"
    assert view.status_class("OUT_OF_MEMORY") == "failed"
    assert view.status_class("TIMEOUT") == "timeout"
    assert view.status_class(None) == "other" and view.status_class("WEIRD") == "other"


def _events(job: DemoJob) -> list[tuple[int, dict[str, object]]]:
    progress, done = agent_payloads(job, 1_767_261_600_000)
    events: list[tuple[int, dict[str, object]]] = [
        (i, {"type": "progress", "host": job.node, "payload": p}) for i, p in enumerate(progress)
    ]
    events.append((99, {"type": "node_done", "host": job.node, "payload": done}))
    return events


def test_gpu_series_from_the_agents_payloads() -> None:
    job = DemoJob(7, "alice", "physics", "COMPLETED", agent=True)
    events = _events(job)
    summary = events[-1][1]["payload"]["gpu_summary"]  # type: ignore[index]
    series = view.gpu_series(events)
    assert [(s.node, s.minor) for s in series] == [("node1", 0), ("node1", 1)]
    for s, g in zip(series, summary["gpus"], strict=True):
        assert s.final and s.uuid == g["uuid"] and s.name == "NVIDIA A100-SXM4-80GB"
        # the intervals tile the run, and their time-weighted mean is the run's exact mean
        starts = [a for a, _, _, _ in s.intervals]
        ends = [b for _, b, _, _ in s.intervals]
        assert starts[1:] == ends[:-1] and starts[0] == summary["first_sample_ms"]
        assert ends[-1] == summary["last_sample_ms"]
        assert s.mean_utilization == round(g["util_percent_ms"] / g["measured_ms"], 1)
        assert s.energy_mj == g["energy_mj"] and s.max_memory_bytes == g["max_memory_bytes"]
    # GPU 0 draws 300 W throughout; GPU 1 60 W, then 200 W from the middle of the run
    assert {p for _, _, _, p in series[0].intervals} == {300.0}
    powers = [p for _, _, _, p in series[1].intervals]
    assert powers[0] == 60.0 and powers[-1] == 200.0
    utils = [u for _, _, u, _ in series[1].intervals]
    assert utils[0] == 0.0 and utils[-1] == 60.0
    totals = view.energy_totals(series)
    assert totals["energy_mj"] == sum(g["energy_mj"] for g in summary["gpus"])
    assert totals["final"] is True


def test_gpu_series_restarted_figures_start_a_new_baseline() -> None:
    job = DemoJob(8, "alice", "physics", "COMPLETED", agent=True)
    events = _events(job)
    # a second agent's figures, smaller than the first's: no negative interval
    later = events[0][1]["payload"]
    events.insert(2, (50, {"type": "progress", "host": "node1", "payload": later}))
    for s in view.gpu_series(events):
        assert all(b > a for a, b, _, _ in s.intervals)
        assert all(u is None or 0 <= u <= 100 for _, _, u, _ in s.intervals)


def test_gpu_series_ignores_malformed_payloads() -> None:
    events: list[tuple[int, dict[str, object]]] = [
        (0, {"type": "progress", "host": "n", "payload": {"source": "agent", "time_ms": "x"}}),
        (
            1,
            {
                "type": "progress",
                "host": "n",
                "payload": {"source": "agent", "time_ms": 5, "gpus": [{"minor": True}, "x"]},
            },
        ),
        (2, {"type": "node_done", "host": "n", "payload": {"gpu_summary": "none"}}),
        (3, {"type": "progress", "host": "n", "payload": {"source": "job", "percent": 5}}),
    ]
    assert view.gpu_series(events) == []


def test_step_chart_escapes_labels() -> None:
    svg = step_chart("t<i>", [("<script>x</script>", [(0, 1000, 50.0)])], "%", fixed_max=100)
    assert "<script>" not in svg and html.escape("<script>x</script>") in svg
    assert "no figures recorded" in step_chart("t", [("a", [])], "W")


def test_lifecycle_shows_private_fields_only_when_opened() -> None:
    ev = {
        "id": "e1",
        "type": "scheduled",
        "host": "ctl",
        "time": "t",
        "seq": 0,
        "payload": {"job_name": {"sha256_commitment": "ab" * 32}, "user": "alice"},
    }
    (line,) = view.lifecycle([(3, ev)])
    assert line.private == [("job_name", "[private]")] and line.leaf_index == 3
    (line,) = view.lifecycle([(3, ev)], {"e1": {"job_name": "secret\n"}})
    assert line.private == [("job_name", "secret\\n")]
