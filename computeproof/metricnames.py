"""Prometheus naming and unit conventions shared by every ComputeProof exporter.

The agent's /metrics (slurm_hooks/agent/metrics.py) and the collector's use these, so all
series read alike (https://prometheus.io/docs/practices/naming/):

- names are ``computeproof_<subsystem>_<what>_<unit>``, snake_case; a counter ends in
  ``_total`` and only a counter does;
- values are in base units: seconds, joules, bytes, watts, celsius; a ratio is 0-1, never
  a percent. Our events keep integers in ms, mJ, mW and percent (canonical JSON has no
  floats); :func:`seconds`, :func:`joules`, :func:`watts` and :func:`ratio` convert;
- labels: ``cluster``, ``node``, ``minor`` (device minor number), ``uuid``, ``model``,
  ``jobid`` (Slurm's numeric job id), ``slurm_job`` (the display id: ``100_4`` for an array
  task) and ``user``/``account`` unless the site lists them in ``private_fields``. Never
  ``job`` or ``instance``: Prometheus sets those itself, and a clash renames ours to
  ``exported_job``.

Standard library only; no prometheus-client here (the collector may build its families
itself).
"""

from __future__ import annotations

import re

from computeproof.errors import ConfigError

NAMESPACE = "computeproof"
UNITS = ("seconds", "joules", "bytes", "watts", "celsius", "ratio", "events", "connections")
PRIVATE_LABELS = ("user", "account")  # labels that name people, dropped when private
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def metric_name(subsystem: str, what: str, unit: str | None = None, counter: bool = False) -> str:
    """``computeproof_<subsystem>_<what>[_<unit>][_total]``, checked against the rules above.

    >>> metric_name("job_gpu", "energy", "joules", counter=True)
    'computeproof_job_gpu_energy_joules_total'
    """
    parts = [NAMESPACE, subsystem, what]
    if unit is not None:
        if unit not in UNITS:
            raise ConfigError(f"metric unit {unit!r} is not a base unit; use one of {UNITS}")
        parts.append(unit)
    name = "_".join(parts)
    if not _NAME.fullmatch(name) or "__" in name:
        raise ConfigError(f"metric name {name!r} is not snake_case")
    if name.endswith("_total") and not counter:
        raise ConfigError(f"{name}: only a counter may end in _total")
    return name + "_total" if counter else name


def seconds(ms: int) -> float:
    """Milliseconds as seconds."""
    return ms / 1000


def joules(mj: int) -> float:
    """Millijoules as joules."""
    return mj / 1000


def watts(mw: int) -> float:
    """Milliwatts as watts."""
    return mw / 1000


def ratio(percent: float) -> float:
    """A percentage (0-100) as a ratio (0-1)."""
    return percent / 100


def label_value(value: object) -> str:
    """A label value: text as itself, except characters that are not valid Unicode
    (bytes decoded with surrogateescape), which the exposition format cannot carry and are
    written as ``\\udcff`` escapes; None as the empty string."""
    if value is None:
        return ""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def public_labels(private_fields: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The people-naming labels (user, account) the site has not marked private."""
    return tuple(name for name in PRIVATE_LABELS if name not in private_fields)
