"""Each benchmark's headline figures as JSON lines, next to what it prints, for bench/report.py.

A script adds ``--results PATH`` with ``add_results_option`` and, once it has its figures,
appends one record per figure with ``write_results``:

    {"bench": "links", "figure": "resolve p99, HTTP", "value": 1.23, "unit": "ms",
     "baseline": "GET /healthz p99", "baseline_value": 0.9, "baseline_unit": "ms",
     "ratio": 1.37, "goal": "<= 5 ms", "met": true}

``ratio`` is value / baseline_value (a sessions/s figure over an appends/s baseline too), null
when the figure says the two cannot be divided (cores against microseconds per datagram).
A figure its script measures no baseline for (decode errors, a delivery check, the SFU's first
frame) has ``baseline`` and ``baseline_value`` null; ``goal`` and ``met`` are null when the
script sets no goal.
"""

import argparse
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS_ENV = "ANTECHAMBER_BENCH_RESULTS"


@dataclass(frozen=True)
class Figure:
    bench: str
    figure: str
    value: float
    unit: str
    baseline: str | None
    baseline_value: float | None
    baseline_unit: str | None = None  # None: the figure's own unit
    goal: str | None = None
    met: bool | None = None
    comparable: bool = True  # False: the baseline is another kind of quantity, so no ratio

    def __post_init__(self) -> None:
        if (self.baseline is None) != (self.baseline_value is None):
            raise ValueError(f"{self.figure}: a baseline needs both its name and its value")

    @property
    def ratio(self) -> float | None:
        if self.baseline_value is None or not self.comparable or self.baseline_value == 0:
            return None
        return self.value / self.baseline_value

    def record(self) -> dict[str, Any]:
        record = asdict(self)
        del record["comparable"]
        if self.baseline is not None and self.baseline_unit is None:
            record["baseline_unit"] = self.unit
        return record | {"ratio": self.ratio}


def add_results_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results",
        type=Path,
        default=os.environ.get(RESULTS_ENV) or None,
        help=f"append each headline figure to this file as a JSON line (or ${RESULTS_ENV})",
    )


def write_results(path: Path | None, figures: Iterable[Figure]) -> None:
    """Append the figures' records to ``path``; nothing without one."""
    if path is None:
        return
    lines = "".join(json.dumps(figure.record()) + "\n" for figure in figures)
    with path.open("a") as out:
        out.write(lines)


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
