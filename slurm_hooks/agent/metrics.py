"""The agent's Prometheus endpoint (prometheus-client), on when ``prometheus_port`` > 0.

Series are built at scrape time from one consistent snapshot of the agent (no stale
series to remove, nothing done between scrapes). ``prometheus_format`` chooses them:

native (default), names and units per computeproof.metricnames::

    per GPU of the node, bound or idle (labels cluster node minor uuid model jobid
    slurm_job [user] [account]; jobid "" when idle):
      computeproof_gpu_utilization_ratio, computeproof_gpu_memory_used_bytes,
      computeproof_gpu_memory_total_bytes, computeproof_gpu_power_watts,
      computeproof_gpu_temperature_celsius, computeproof_gpu_energy_joules_total
      (the GPU's own counter), computeproof_gpu_job_id (the job holding it, 0 when idle)
    per job and GPU, while the job runs (same labels), the figures its receipt records:
      computeproof_job_gpu_busy_seconds_total, ..._utilization_seconds_total (busy time
      weighted by utilization), ..._energy_joules_total, ..._measured_seconds_total,
      ..._unmeasured_seconds_total, ..._samples_total, computeproof_job_gpu_memory_max_bytes
    agent health (labels cluster node): computeproof_agent_last_sample_age_seconds,
      ..._sample_failures_total, ..._nvml_errors_total, ..._spool_backlog_events,
      ..._hook_failures_total, ..._jobs, ..._pass_duration_seconds,
      ..._socket_requests_total{op,result}, ..._connections_refused_total{reason},
      ..._open_connections, ..._info{version,driver}; and process_* (CPU, memory)

jobstats: the names and labels of Princeton jobstats' GPU exporter
(nvidia_gpu_prometheus_exporter), so jobstats and its dashboards can read this agent
instead: nvidia_gpu_num_devices, nvidia_gpu_duty_cycle (percent),
nvidia_gpu_memory_used_bytes, nvidia_gpu_memory_total_bytes,
nvidia_gpu_power_usage_milliwatts, nvidia_gpu_temperature_celsius, and, for a GPU a job
holds, nvidia_gpu_jobId and nvidia_gpu_jobUid; labels ordinal (NVML index), minor_number,
uuid, name, GPU_I_ID (MIG instance, "" here), jobid and userid ("" when idle). The
``cluster`` label comes from the scrape configuration, as jobstats sets it up.

both: the two sets side by side.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from computeproof import metricnames as mn
from computeproof.errors import AgentError
from slurm_hooks.agent.binding import jobs_by_minor

FORMATS = ("native", "jobstats", "both")
MAX_SCRAPERS = 8  # concurrent HTTP connections; more are closed at once
SCRAPE_TIMEOUT_S = 10.0


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("computeproof")
    except Exception:  # not installed as a distribution (a checkout on sys.path)
        return "unknown"


class _Quiet(WSGIRequestHandler):
    """No access log on stderr; a slow or silent client is dropped after a timeout."""

    timeout = SCRAPE_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """A WSGI server with a thread per connection, at most MAX_SCRAPERS at once."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._busy = threading.BoundedSemaphore(MAX_SCRAPERS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._busy.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._busy.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._busy.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a scraper that hung up is not worth a traceback


def _server_class(address: str) -> type[_Server]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET

    class Server(_Server):
        address_family = family

    return Server


class AgentCollector:
    """A prometheus-client collector that reads the agent at scrape time."""

    def __init__(self, agent: Any, fmt: str, private_fields: tuple[str, ...]) -> None:
        self.agent = agent
        self.format = fmt
        self.people = mn.public_labels(private_fields)
        self.started = agent.clock() / 1000
        self.version = _version()

    # -- the snapshot -------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        agent = self.agent
        with agent._lock:
            sample = agent.last_sample
            good = agent.last_good_sample
            bindings = dict(agent.bindings)
            energy = dict(agent.last_energy)
            jobs = [
                (acc.binding, {m: t.to_dict() for m, t in acc.gpus.items()})
                for acc in agent.jobs.values()
            ]
        return {
            "sample": sample,
            "good": good,
            "bindings": bindings,
            "by_minor": jobs_by_minor(bindings),
            "jobs": jobs,
            "energy": energy,
            "now": agent.clock() / 1000,
        }

    def collect(self) -> Iterator[Any]:
        """Every family of the configured format."""
        snap = self._snapshot()
        if self.format in ("native", "both"):
            yield from self._native(snap)
        if self.format in ("jobstats", "both"):
            yield from self._jobstats(snap)

    # -- native -------------------------------------------------------------------------

    def _job_labels(self, binding: Any) -> list[str]:
        values = [str(binding.job_id), mn.label_value(binding.job)]
        people = {"user": binding.user, "account": binding.account}
        return values + [mn.label_value(people[name]) for name in self.people]

    def _native(self, snap: dict[str, Any]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        agent = self.agent
        cluster, node = mn.label_value(agent.config.cluster), mn.label_value(agent.node)
        gpu_labels = ["cluster", "node", "minor", "uuid", "model"]
        job_labels = ["jobid", "slurm_job", *self.people]
        labels = gpu_labels + job_labels

        def gauge(what: str, unit: str | None, doc: str) -> Any:
            return GaugeMetricFamily(mn.metric_name("gpu", what, unit), doc, labels=labels)

        util = gauge("utilization", "ratio", "GPU utilization in the last sample period, 0-1")
        used = gauge("memory_used", "bytes", "GPU memory in use")
        total = gauge("memory_total", "bytes", "GPU memory installed")
        power = gauge("power", "watts", "GPU power draw")
        temp = gauge("temperature", "celsius", "GPU temperature")
        holder = gauge("job_id", None, "Slurm job id holding the GPU, 0 when idle")
        energy = CounterMetricFamily(
            mn.metric_name("gpu", "energy", "joules", counter=True),
            "the GPU's total-energy counter (NVML; read every energy_interval)",
            labels=labels,
        )
        sample = snap["sample"]
        readings = (sample.readings or {}) if sample is not None else {}
        gpus = sample.gpus if sample is not None else {}
        info_by_minor = dict(gpus)
        bindings = snap["bindings"]
        for minor, info in sorted(gpus.items()):
            job_ids = snap["by_minor"].get(minor, [])
            binding = bindings.get(job_ids[0]) if job_ids else None
            who = self._job_labels(binding) if binding is not None else [""] * len(job_labels)
            values = [cluster, node, str(minor), info.uuid, mn.label_value(info.name), *who]
            total.add_metric(values, info.memory_total)
            holder.add_metric(values, binding.job_id if binding is not None else 0)
            reading = readings.get(minor)
            if reading is None:
                continue
            if reading.utilization is not None:
                util.add_metric(values, mn.ratio(reading.utilization))
            if reading.memory_used is not None:
                used.add_metric(values, reading.memory_used)
            if reading.power_mw is not None:
                power.add_metric(values, mn.watts(reading.power_mw))
            if reading.temperature_c is not None:
                temp.add_metric(values, reading.temperature_c)
            if minor in snap["energy"]:  # the counter is read every energy_interval
                energy.add_metric(values, mn.joules(snap["energy"][minor]))
        yield from (util, used, total, power, temp, energy, holder)

        def job_counter(what: str, unit: str | None, doc: str) -> Any:
            return CounterMetricFamily(
                mn.metric_name("job_gpu", what, unit, counter=True), doc, labels=labels
            )

        busy = job_counter("busy", "seconds", "time the GPU was busy (utilization > 0)")
        weighted = job_counter("utilization", "seconds", "busy time weighted by utilization")
        job_energy = job_counter("energy", "joules", "energy the job used on the GPU")
        measured = job_counter("measured", "seconds", "time covered by readings")
        unmeasured = job_counter("unmeasured", "seconds", "time without a reading")
        samples = job_counter(
            "samples", None, "readings taken (the first is the baseline and covers no time)"
        )
        peak = GaugeMetricFamily(
            mn.metric_name("job_gpu", "memory_max", "bytes"),
            "largest GPU memory use seen in the job",
            labels=labels,
        )
        for binding, per_gpu in snap["jobs"]:
            who = self._job_labels(binding)
            for minor, fig in sorted(per_gpu.items()):
                info = info_by_minor.get(minor)
                uuid = fig.get("uuid") or (info.uuid if info else "")
                model = fig.get("name") or (info.name if info else "")
                values = [cluster, node, str(minor), str(uuid), mn.label_value(model), *who]
                busy.add_metric(values, mn.seconds(fig["busy_ms"]))
                weighted.add_metric(values, mn.seconds(fig["util_weighted_ms"]))
                job_energy.add_metric(values, mn.joules(fig["energy_mj"]))
                measured.add_metric(values, mn.seconds(fig["measured_ms"]))
                unmeasured.add_metric(values, mn.seconds(fig["unmeasured_ms"]))
                samples.add_metric(values, fig["samples"])
                peak.add_metric(values, fig["max_memory_bytes"])
        yield from (busy, weighted, job_energy, measured, unmeasured, samples, peak)
        yield from self._health(snap, cluster, node)

    def _health(self, snap: dict[str, Any], cluster: str, node: str) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        agent = self.agent
        base = ["cluster", "node"]
        here = [cluster, node]

        def one(family: Any, value: float) -> Any:
            family.add_metric(here, value)
            return family

        good = snap["good"]
        since = good.t_ms / 1000 if good is not None else self.started
        yield one(
            GaugeMetricFamily(
                mn.metric_name("agent", "last_sample_age", "seconds"),
                "time since the last sampling pass that read NVML (since start if none)",
                labels=base,
            ),
            max(0.0, snap["now"] - since),
        )
        yield one(
            CounterMetricFamily(
                mn.metric_name("agent", "sample_failures", counter=True),
                "sampling passes that got no NVML reading",
                labels=base,
            ),
            agent.gaps,
        )
        yield one(
            CounterMetricFamily(
                mn.metric_name("agent", "nvml_errors", counter=True),
                "NVML calls that failed (not-supported fields excluded)",
                labels=base,
            ),
            agent.sampler.nvml_errors,
        )
        yield one(
            GaugeMetricFamily(
                mn.metric_name("agent", "spool_backlog", "events"),
                "events in the spool waiting to be forwarded",
                labels=base,
            ),
            agent.spool.count_pending(),
        )
        yield one(
            CounterMetricFamily(
                mn.metric_name("agent", "hook_failures", counter=True),
                "Slurm hook failures (the larger of the spool's and the run dir's counter)",
                labels=base,
            ),
            _hook_failures(agent.config.spool_dir, agent.config.run_dir),
        )
        yield one(
            GaugeMetricFamily(
                mn.metric_name("agent", "jobs"), "jobs with a GPU binding here", labels=base
            ),
            len(snap["jobs"]),
        )
        yield one(
            GaugeMetricFamily(
                mn.metric_name("agent", "pass_duration", "seconds"),
                "how long the last sampling pass took",
                labels=base,
            ),
            agent.last_pass_s,
        )
        stats = agent.socket_stats
        requests = CounterMetricFamily(
            mn.metric_name("agent", "socket_requests", counter=True),
            "socket requests answered, by op and result",
            labels=[*base, "op", "result"],
        )
        for (op, result), n in sorted(dict(stats.requests).items()):
            requests.add_metric([*here, op, result], n)
        yield requests
        refused = CounterMetricFamily(
            mn.metric_name("agent", "connections_refused", counter=True),
            "socket connections refused, by reason",
            labels=[*base, "reason"],
        )
        for reason, n in sorted(dict(stats.refused).items()):
            refused.add_metric([*here, reason], n)
        yield refused
        yield one(
            GaugeMetricFamily(
                mn.metric_name("agent", "open", "connections"),
                "socket connections being answered",
                labels=base,
            ),
            stats.open_connections,
        )
        info = GaugeMetricFamily(
            mn.metric_name("agent", "info"),
            "the agent's version and the NVIDIA driver's",
            labels=[*base, "version", "driver"],
        )
        sample = snap["sample"]
        driver = sample.driver_version if sample is not None else ""
        info.add_metric([*here, self.version, mn.label_value(driver)], 1)
        yield info

    # -- jobstats -------------------------------------------------------------------------

    def _jobstats(self, snap: dict[str, Any]) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        labels = ["ordinal", "minor_number", "uuid", "name", "GPU_I_ID", "jobid", "userid"]

        def gauge(name: str, doc: str) -> Any:
            return GaugeMetricFamily(name, doc, labels=labels)

        sample = snap["sample"]
        gpus = sample.gpus if sample is not None else {}
        readings = (sample.readings or {}) if sample is not None else {}
        count = GaugeMetricFamily("nvidia_gpu_num_devices", "number of GPUs NVML lists")
        count.add_metric([], len(gpus))
        used = gauge("nvidia_gpu_memory_used_bytes", "GPU memory in use, bytes")
        total = gauge("nvidia_gpu_memory_total_bytes", "GPU memory installed, bytes")
        duty = gauge("nvidia_gpu_duty_cycle", "GPU utilization in the last sample period, %")
        power = gauge("nvidia_gpu_power_usage_milliwatts", "GPU power draw, milliwatts")
        temp = gauge("nvidia_gpu_temperature_celsius", "GPU temperature, celsius")
        job_id = gauge("nvidia_gpu_jobId", "Slurm job id holding the GPU")
        job_uid = gauge("nvidia_gpu_jobUid", "uid of the user whose job holds the GPU")
        bindings = snap["bindings"]
        for minor, info in sorted(gpus.items(), key=lambda kv: kv[1].index):
            job_ids = snap["by_minor"].get(minor, [])
            binding = bindings.get(job_ids[0]) if job_ids else None
            jobid = str(binding.job_id) if binding is not None else ""
            userid = str(binding.uid) if binding is not None else ""
            values = [
                str(info.index), str(minor), info.uuid, mn.label_value(info.name), "",
                jobid, userid,
            ]  # fmt: skip
            total.add_metric(values, info.memory_total)
            if binding is not None:
                job_id.add_metric(values, binding.job_id)
                job_uid.add_metric(values, binding.uid)
            reading = readings.get(minor)
            if reading is None:
                continue
            if reading.memory_used is not None:
                used.add_metric(values, reading.memory_used)
            if reading.utilization is not None:
                duty.add_metric(values, reading.utilization)
            if reading.power_mw is not None:
                power.add_metric(values, reading.power_mw)
            if reading.temperature_c is not None:
                temp.add_metric(values, reading.temperature_c)
        yield from (count, used, total, duty, power, temp, job_id, job_uid)


def _hook_failures(spool_dir: str, run_dir: str) -> int:
    """The hooks count each failure in the spool and on the run dir's tmpfs, which still
    counts when the spool's disk is full."""
    from computeproof.spool import read_failure_counter

    return max(read_failure_counter(spool_dir)[0], read_failure_counter(run_dir)[0])


class Exporter:
    """Serves the agent's series over HTTP for Prometheus to scrape."""

    def __init__(
        self,
        agent: Any,
        port: int,
        address: str = "127.0.0.1",
        fmt: str = "native",
        private_fields: tuple[str, ...] = (),
    ) -> None:
        if fmt not in FORMATS:
            raise AgentError(
                f"prometheus_format {fmt!r} is not one of {', '.join(FORMATS)}; see docs/metrics.md"
            )
        try:
            import prometheus_client
            from prometheus_client import ProcessCollector
        except ImportError as e:
            raise AgentError(
                "prometheus_port is set but prometheus-client is not installed "
                "(pip install 'computeproof[gpu]')"
            ) from e
        self.registry = prometheus_client.CollectorRegistry(auto_describe=False)
        self.collector = AgentCollector(agent, fmt, private_fields)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        app = prometheus_client.make_wsgi_app(self.registry)
        try:
            self.server = make_server(
                address, port, app, _server_class(address), handler_class=_Quiet
            )
        except OSError as e:
            raise AgentError(
                f"cannot serve Prometheus metrics on {address} port {port}: {e.strerror or e}"
            ) from e
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="computeproof-metrics", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        """Stop serving."""
        with contextlib.suppress(OSError):
            self.server.shutdown()
            self.server.server_close()


def exporter_for(agent: Any) -> Exporter | None:
    """The exporter the agent's config asks for, started; None when prometheus_port is 0."""
    config = agent.config
    if config.prometheus_port <= 0:
        return None
    return Exporter(
        agent,
        config.prometheus_port,
        config.prometheus_address,
        config.prometheus_format,
        config.private_fields,
    )
