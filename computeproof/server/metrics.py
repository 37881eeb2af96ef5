"""The collector's Prometheus metrics (prometheus-client), one registry an app.

Names follow Prometheus conventions: a ``computeproof_`` prefix, counters end in
``_total``, times in seconds, and label values drawn from small fixed sets (reject
reasons are classified, never the free-text reason itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# (words in a ledger refusal, the reason label), first match wins
_REASONS = (
    ("not enrolled", "unknown_key"),
    ("is enrolled for hosts", "host_not_allowed"),
    ("does not verify", "bad_signature"),
    ("different envelope", "conflicting_event"),
    ("appears twice", "conflicting_event"),
    ("not signed by the sending host", "foreign_signer"),
    ("opening", "bad_opening"),
    ("not canonical", "not_canonical"),
    ("canonical", "not_canonical"),
    ("not JSON", "malformed"),
    ("base64", "malformed"),
    ("envelope", "malformed"),
    ("event", "schema"),
    ("statement", "schema"),
)
REJECT_REASONS = (*dict.fromkeys(label for _, label in _REASONS), "other")


def reject_reason(reason: str) -> str:
    """The metric label of a ledger refusal's free text."""
    for words, label in _REASONS:
        if words in reason:
            return label
    return "other"


class _LogState(Collector):
    """Gauges read when Prometheus scrapes: log size, checkpoint size and age."""

    def __init__(self, read: Callable[[], tuple[int, int | None, float | None]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        size, cp_size, cp_time = self.read()
        yield GaugeMetricFamily("computeproof_log_leaves", "Leaves in the Merkle log.", size)
        if cp_size is not None and cp_time is not None:
            yield GaugeMetricFamily(
                "computeproof_checkpoint_leaves", "Leaves the newest checkpoint covers.", cp_size
            )
            yield GaugeMetricFamily(
                "computeproof_checkpoint_age_seconds",
                "Seconds since the newest checkpoint was signed.",
                max(0.0, time.time() - cp_time),
            )


class Metrics:
    """Counters and gauges of one collector."""

    def __init__(self, log_state: Callable[[], tuple[int, int | None, float | None]]) -> None:
        # the *_created series double every counter for nothing a dashboard uses
        disable_created_metrics()  # type: ignore[no-untyped-call,unused-ignore]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter(
            "computeproof_collector_events_total",
            "Envelopes received, by what became of them.",
            ["result"],
            registry=r,
        )
        self.rejects = Counter(
            "computeproof_collector_rejects_total",
            "Envelopes refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.refused = Counter(
            "computeproof_collector_requests_refused_total",
            "Requests refused before ingest (unsigned, replayed, rate limited...), by reason.",
            ["reason"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "computeproof_collector_batch_duration_seconds",
            "Time to check and append one batch of envelopes.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.checkpoints = Counter(
            "computeproof_checkpoints_signed_total", "Checkpoints signed.", registry=r
        )
        self.checkpoint_failures = Counter(
            "computeproof_checkpoint_failures_total",
            "Checkpoints the collector refused or failed to sign (a rollback alarm among them).",
            registry=r,
        )
        self.anchors = Counter(
            "computeproof_anchors_total",
            "Checkpoints this collector anchored in the configured public registry.",
            registry=r,
        )
        self.anchor_failures = Counter(
            "computeproof_anchor_failures_total",
            "Anchoring attempts that failed (registry unreachable, transaction refused...).",
            registry=r,
        )
        self.host_last_event = Gauge(
            "computeproof_host_last_event_timestamp_seconds",
            "When a host last delivered events (Unix time), by the hosts its key is enrolled for.",
            ["host"],
            registry=r,
        )
        for result in ("accepted", "duplicate", "rejected", "untrusted"):
            self.events.labels(result)
        for reason in REJECT_REASONS:
            self.rejects.labels(reason)
        r.register(_LogState(log_state))
