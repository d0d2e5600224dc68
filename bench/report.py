"""Run every benchmark and write docs/benchmarks.md: each figure next to its same-run baseline,
with the machine it ran on and the date.

    python bench/report.py [--quick] [--only NAME,...] [--out PATH] [--timeout S]

The scripts run one after another, each in a process of its own (never two at once: they would
share the cores they measure), with ``--results`` pointing at a file of their own
(``bench/results.py``); what they print is passed through and kept for the page. A script that
exits non-zero, runs out of time or writes no figures is shown as failed with the last lines
it printed, and this exits 1 once the page is written.

``--only`` takes names from ``BENCHES`` or paths to scripts that take ``--quick`` and
``--results`` as these do. Only a full run of every script writes docs/benchmarks.md by
default; ``--quick`` and ``--only`` runs go to test-artifacts/ unless ``--out`` says otherwise.
"""

import argparse
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import read_results  # noqa: E402

BENCHES = ("eventstore", "scheduling", "links", "signaling", "sfu", "notify", "web")
PAGE = ROOT / "docs" / "benchmarks.md"
QUICK_PAGE = ROOT / "test-artifacts" / "benchmarks-quick.md"
PARTIAL_PAGE = ROOT / "test-artifacts" / "benchmarks-partial.md"
TAIL_LINES = 25
STOP_GRACE_S = 60.0
"""After SIGINT on a timeout: how long a script has to stop its servers before SIGKILL."""
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# -- running the scripts -----------------------------------------------------------------------


@dataclass
class Outcome:
    """One script's run: what it printed, its figures, and how it ended."""

    name: str
    command: str
    seconds: float
    returncode: int
    timed_out: bool
    output: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    unreadable: str | None = None  # why its results file could not be read

    @property
    def failure(self) -> str | None:
        if self.timed_out:
            return f"ran out of time after {self.seconds:.0f} s (exit {self.returncode})"
        if self.returncode != 0:
            return f"exit {self.returncode}"
        if self.unreadable:
            return f"its results could not be read: {self.unreadable}"
        if not self.records:
            return "exit 0 but it wrote no figures"
        return None


def shown(path: Path) -> str:
    """A path as a reader would type it from the repository's root."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_script(name: str, script: Path, quick: bool, timeout: float) -> Outcome:
    args = [sys.executable, str(script), *(["--quick"] if quick else [])]
    command = shlex.join([shown(Path(sys.executable)), shown(script), *args[2:]])
    print(f"\n== {name}: {command}", flush=True)
    output: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ac-bench-") as folder:
        results = Path(folder) / "results.jsonl"
        started = time.monotonic()
        process = subprocess.Popen(
            [*args, "--results", str(results)],
            cwd=ROOT,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},  # its lines as they come
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        reader = threading.Thread(target=relay_output, args=(process, output), daemon=True)
        reader.start()
        timed_out = False
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.send_signal(signal.SIGINT)  # as Ctrl-C: it stops its servers on the way out
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        except KeyboardInterrupt:
            process.wait()  # it got the Ctrl-C too; let it clean up
            raise
        # A server the script left behind may hold the pipe open: do not wait on it for long.
        reader.join(timeout=10)
        seconds = time.monotonic() - started
        outcome = Outcome(name, command, seconds, process.returncode, timed_out, output)
        try:
            outcome.records = read_results(results)
        except ValueError as exc:
            outcome.unreadable = str(exc)
    return outcome


def relay_output(process: "subprocess.Popen[str]", into: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        into.append(ANSI.sub("", line.rstrip("\n")))


# -- the machine -------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} (with uncommitted changes)" if changed else commit


def machine() -> dict[str, str]:
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    return {
        "CPUs": f"{cpus}" + (f" ({usable} usable by this process)" if usable != cpus else ""),
        "CPU model": cpu_model(),
        "memory": memory(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "commit": git_commit(),
        "load average at the start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# -- the page ----------------------------------------------------------------------------------


def number(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def figure_row(record: dict[str, Any]) -> str:
    value = f"{number(record['value'])} {record['unit']}"
    if record["baseline"] is None:
        baseline = "none measured"
    else:
        baseline = (
            f"{record['baseline']}: {number(record['baseline_value'])} {record['baseline_unit']}"
        )
    ratio = "" if record["ratio"] is None else f"{number(record['ratio'])}x"
    met = {True: "yes", False: "**no**", None: ""}[record["met"]]
    cells = (record["figure"], value, baseline, ratio, record["goal"] or "", met)
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def goals(outcome: Outcome) -> str:
    judged = [r["met"] for r in outcome.records if r["met"] is not None]
    return f"{sum(judged)} of {len(judged)}" if judged else ""


def script_section(outcome: Outcome) -> list[str]:
    lines = [
        f"## {outcome.name}",
        "",
        f"`{outcome.command}`: {duration(outcome.seconds)}, exit {outcome.returncode}.",
        "",
    ]
    if outcome.failure:
        lines += [f"**Failed: {outcome.failure}.** The last lines it printed:", "", "```text"]
        lines += outcome.output[-TAIL_LINES:] or ["(nothing)"]
        lines += ["```", ""]
    if outcome.records:
        lines += [
            "| figure | value | same-run baseline | ratio | goal | met |",
            "| --- | ---: | --- | ---: | --- | --- |",
            *(figure_row(r) for r in outcome.records),
            "",
        ]
    if outcome.output and not outcome.failure:
        lines += ["<details><summary>What it printed</summary>", "", "```text"]
        lines += [*outcome.output, "```", "", "</details>", ""]
    return lines


def page(
    outcomes: list[Outcome], about: dict[str, str], started: datetime, command: str, quick: bool
) -> str:
    took = sum(o.seconds for o in outcomes)
    lines = [
        "# Benchmarks",
        "",
        "<!-- Written by bench/report.py (`make bench`); a hand edit is lost on the next run. -->",
        "",
        "Each figure was measured next to its baseline in the same run of the same script, on",
        "the machine below (ratio = value / baseline). Each script's docstring says what it",
        "measures and how; `make bench` runs them all again and rewrites this page.",
        "",
    ]
    if quick:
        lines += ["**Quick sizes (`--quick`): smoke-test figures, not the benchmarks'.**", ""]
    lines += [
        "## The run",
        "",
        "| | |",
        "| --- | --- |",
        f"| date | {started:%Y-%m-%d %H:%M} UTC |",
        f"| command | `{command}` |",
        *(f"| {k} | {cell(v)} |" for k, v in about.items()),
        f"| took | {duration(took)} |",
        "",
        "## The scripts",
        "",
        "| script | took | figures | goals met | result |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for o in outcomes:
        result = f"**failed: {o.failure}**" if o.failure else "ok"
        lines.append(
            f"| [{o.name}](#{o.name}) | {duration(o.seconds)} | {len(o.records)} | {goals(o)} "
            f"| {cell(result)} |"
        )
    lines.append("")
    for o in outcomes:
        lines += script_section(o)
    return "\n".join(lines).rstrip() + "\n"


# -- main --------------------------------------------------------------------------------------


def scripts(only: str | None, parser: argparse.ArgumentParser) -> list[tuple[str, Path]]:
    wanted = [x.strip() for x in only.split(",") if x.strip()] if only else list(BENCHES)
    chosen = []
    for item in wanted:
        if item in BENCHES:
            chosen.append((item, ROOT / "bench" / f"{item}.py"))
        elif item.endswith(".py") and Path(item).is_file():
            chosen.append((Path(item).stem, Path(item).resolve()))
        else:
            parser.error(f"--only: {item!r} is neither one of {', '.join(BENCHES)} nor a script")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("--only", help="comma-separated bench names or script paths")
    parser.add_argument("--out", type=Path, help=f"the page (default {shown(PAGE)})")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds per script before it is stopped"
    )
    args = parser.parse_args()
    chosen = scripts(args.only, parser)
    out = args.out or (QUICK_PAGE if args.quick else PARTIAL_PAGE if args.only else PAGE)
    command = shlex.join([shown(Path(sys.executable)), shown(Path(__file__)), *sys.argv[1:]])

    started = datetime.now(UTC)
    about = machine()  # the load average before the scripts add to it
    outcomes = [run_script(name, path, args.quick, args.timeout) for name, path in chosen]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(outcomes, about, started, command, args.quick))
    failed = [o.name for o in outcomes if o.failure]
    print(f"\nwrote {shown(out.resolve())}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
