"""Optional Prometheus endpoint (prometheus-client), on when ``prometheus_port`` > 0.

Gauges are labelled by node, job and GPU minor number and follow the accumulated figures;
a job's series disappear when its binding does.
"""

from __future__ import annotations

from typing import Any

from computeproof.errors import AgentError

_FIGURES = {
    "busy_ms": "GPU-milliseconds with utilization above zero",
    "util_weighted_ms": "utilization-weighted GPU-milliseconds",
    "energy_mj": "energy attributed to the job, millijoules",
    "max_memory_bytes": "largest GPU memory used, bytes",
    "unmeasured_ms": "GPU-milliseconds without a reading",
    "samples": "readings taken",
}


class Exporter:
    """Serves the agent's figures over HTTP for Prometheus to scrape."""

    def __init__(self, port: int, addr: str = "127.0.0.1") -> None:
        try:
            import prometheus_client
        except ImportError as e:
            raise AgentError(
                "prometheus_port is set but prometheus-client is not installed "
                "(pip install 'computeproof[gpu]')"
            ) from e
        self.registry = prometheus_client.CollectorRegistry()
        labels = ["node", "job", "minor"]
        self.gauges: dict[str, Any] = {
            name: prometheus_client.Gauge(
                f"computeproof_gpu_{name}", doc, labels, registry=self.registry
            )
            for name, doc in _FIGURES.items()
        }
        self.gaps = prometheus_client.Gauge(
            "computeproof_agent_gaps", "passes without NVML", ["node"], registry=self.registry
        )
        self._series: set[tuple[str, str, str]] = set()
        try:
            prometheus_client.start_http_server(port, addr=addr, registry=self.registry)
        except OSError as e:
            raise AgentError(f"cannot serve Prometheus metrics on port {port}: {e}") from e

    def update(self, agent: Any) -> None:
        """Set every gauge from the agent's current job figures."""
        seen: set[tuple[str, str, str]] = set()
        with agent._lock:
            for acc in agent.jobs.values():
                for minor, totals in acc.gpus.items():
                    key = (agent.node, acc.binding.job, str(minor))
                    seen.add(key)
                    figures = totals.to_dict()
                    for name, gauge in self.gauges.items():
                        gauge.labels(*key).set(figures[name])
        for key in self._series - seen:
            for gauge in self.gauges.values():
                gauge.remove(*key)
        self._series = seen
        self.gaps.labels(agent.node).set(agent.gaps)
