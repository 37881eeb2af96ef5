"""Rate cards: the price of a GPU-hour by GPU model and partition, and the grid's carbon
intensity, read from a TOML file (conf/ratecard.toml) with exact decimals.

    currency = "EUR"
    default = "2.00"                    # per GPU-hour when no rate matches (optional)
    grid_intensity_g_per_kwh = 350      # optional; --grid-intensity overrides
    [[rate]]
    gpu_model = "a100"                  # optional: any model
    partition = "gpu"                   # optional: any partition
    price = "2.50"                      # per GPU-hour

The most specific rate wins: model and partition, then model, then partition, then default.
Numbers are read as decimals (TOML floats never pass through binary floating point).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from computeproof.errors import ReportError


@dataclass(frozen=True)
class Rate:
    """One price line: GPU model and partition (None: any) and price per GPU-hour."""

    gpu_model: str | None
    partition: str | None
    price: Decimal


@dataclass(frozen=True)
class RateCard:
    """Prices per GPU-hour and the grid intensity used for CO2e."""

    currency: str
    default: Decimal | None
    rates: tuple[Rate, ...]
    grid_intensity_g_per_kwh: Decimal | None = None
    source: str = ""

    def price(self, gpu_model: str | None, partition: str | None) -> Decimal | None:
        """Price per GPU-hour of a job on ``gpu_model`` in ``partition`` (None: unpriced)."""
        best: tuple[int, Decimal] | None = None
        for r in self.rates:
            if r.gpu_model is not None and r.gpu_model != gpu_model:
                continue
            if r.partition is not None and r.partition != partition:
                continue
            score = (2 if r.gpu_model is not None else 0) + (1 if r.partition is not None else 0)
            if best is None or score > best[0]:
                best = (score, r.price)
        return best[1] if best is not None else self.default

    def to_json(self) -> dict[str, object]:
        """The rate card as embedded in a report (decimals as strings)."""
        return {
            "currency": self.currency,
            "default": None if self.default is None else str(self.default),
            "grid_intensity_g_per_kwh": None
            if self.grid_intensity_g_per_kwh is None
            else str(self.grid_intensity_g_per_kwh),
            "rates": [
                {"gpu_model": r.gpu_model, "partition": r.partition, "price": str(r.price)}
                for r in self.rates
            ],
            "source": self.source,
        }


def decimal_value(value: object, where: str) -> Decimal:
    """A non-negative decimal from TOML (number or numeric string); ``where`` names the key."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ReportError(f"{where} must be a number, not {type(value).__name__} {value!r}")
    try:
        out = Decimal(value) if not isinstance(value, Decimal) else value
    except ArithmeticError as e:
        raise ReportError(f"{where} must be a number, not {value!r}") from e
    if not out.is_finite() or out < 0:
        raise ReportError(f"{where} must be a finite number >= 0, not {value}")
    return out


def load_toml(path: str, what: str) -> dict[str, Any]:
    """Read a TOML file with decimals; errors name the file and line."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f, parse_float=Decimal)
    except FileNotFoundError as e:
        raise ReportError(f"{what} {path} does not exist") from e
    except OSError as e:
        raise ReportError(f"cannot read {what} {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ReportError(f"{what} {path}: invalid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise ReportError(f"{what} {path}: not a TOML file (not UTF-8 text)") from e
    except RecursionError as e:
        raise ReportError(f"{what} {path}: nested too deeply to be a {what}") from e


def _opt_text(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ReportError(f"{where} must be a non-empty string, not {value!r}")
    return value


def parse_ratecard(data: dict[str, Any], source: str) -> RateCard:
    """Check and build a rate card from decoded TOML; errors name the file and key path."""
    known = {"currency", "default", "grid_intensity_g_per_kwh", "rate"}
    for key in data:
        if key not in known:
            raise ReportError(f"{source}: unknown key '{key}' (known: {', '.join(sorted(known))})")
    currency = data.get("currency", "EUR")
    if not isinstance(currency, str) or not currency:
        raise ReportError(f"{source}: 'currency' must be a non-empty string, not {currency!r}")
    default = decimal_value(data["default"], f"{source}: 'default'") if "default" in data else None
    grid = (
        decimal_value(data["grid_intensity_g_per_kwh"], f"{source}: 'grid_intensity_g_per_kwh'")
        if "grid_intensity_g_per_kwh" in data
        else None
    )
    lines = data.get("rate", [])
    if not isinstance(lines, list):
        raise ReportError(f"{source}: 'rate' must be an array of tables ([[rate]])")
    rates: list[Rate] = []
    for i, line in enumerate(lines):
        where = f"{source}: rate[{i}]"
        if not isinstance(line, dict):
            raise ReportError(f"{where} must be a table")
        for key in line:
            if key not in ("gpu_model", "partition", "price"):
                raise ReportError(f"{where}: unknown key '{key}'")
        if "price" not in line:
            raise ReportError(f"{where}: 'price' is missing")
        rates.append(
            Rate(
                _opt_text(line.get("gpu_model"), f"{where}.gpu_model"),
                _opt_text(line.get("partition"), f"{where}.partition"),
                decimal_value(line["price"], f"{where}.price"),
            )
        )
    seen: set[tuple[str | None, str | None]] = set()
    for i, r in enumerate(rates):
        if (r.gpu_model, r.partition) in seen:
            raise ReportError(
                f"{source}: rate[{i}] repeats gpu_model={r.gpu_model!r} partition={r.partition!r}"
            )
        seen.add((r.gpu_model, r.partition))
    return RateCard(currency, default, tuple(rates), grid, source)


def load_ratecard(path: str) -> RateCard:
    """Load and check a rate card file."""
    return parse_ratecard(load_toml(path, "rate card"), path)


def ratecard_from_json(data: object) -> RateCard:
    """The rate card embedded in a report."""
    if not isinstance(data, dict):
        raise ReportError("report: embedded rate card is not an object")
    try:
        return RateCard(
            str(data["currency"]),
            None if data["default"] is None else Decimal(str(data["default"])),
            tuple(
                Rate(r["gpu_model"], r["partition"], Decimal(str(r["price"])))
                for r in data["rates"]
            ),
            None
            if data["grid_intensity_g_per_kwh"] is None
            else Decimal(str(data["grid_intensity_g_per_kwh"])),
            str(data.get("source", "")),
        )
    except (KeyError, TypeError, ArithmeticError) as e:
        raise ReportError(f"report: embedded rate card is malformed: {e}") from e
