"""gaia-db benchmarks: each figure next to its baseline, measured in the same run on a PostgreSQL this starts.

    venv/bin/python -m bench                 # full size (1,000,000 chat_messages rows)
    venv/bin/python -m bench --quick         # CI smoke size
    venv/bin/python -m bench --write         # also write bench/RESULTS.md

1. no-op deploy: connections the release provider's diff opens (real provider process) vs the seed's psql session
2. release time: fresh database to head and again on an up-to-date one, vs `psql -f` of the seed's SQL
3. online migration: writes during the release's CONCURRENTLY index build vs a plain CREATE INDEX
4. program evaluation: each stack under the mock engine vs a program with one aws.rds.Instance (fresh processes)
5. schema-change patterns: writes during each dbops.online helper vs the naive statement (bench/patterns.py)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import ROOT, evaluation, online, patterns, release_bench

NOOP = "1. No-op deploy: DB connections opened"
FRESH = "2. Release: fresh DB to head (migrations, roles, seed)"
AGAIN = "2. Release again on an up-to-date DB"
FAILED = "3. Online index build: failed writes"
BEFORE = "3. Write latency before, p50 / p99 / max"
DURING = "3. Write latency during, p50 / p99 / max"
SPREAD = "3. Write latency during: p99 of one round, lowest to highest"
BUILD = "3. Index build (ours: whole release) duration, median"
EVAL = "4. Evaluate"
PATTERN = "5. Pattern"
PATTERN_GOAL = "0 failed, max ≤ 50 ms"
# Where an AWS stack's extra evaluation time goes: the VPC lookup and security group need pulumi_aws.ec2, which the
# single-instance baseline never loads.
IMPORT_ROW = "4. of which: loading pulumi_aws.ec2 (aws stacks only)"
STACKS = [("dev", "fly"), ("staging", "fly"), ("prod", "fly"), ("local", "local"), ("prod", "aws"), ("prod", "gcp")]
RESULTS = ROOT / "bench" / "RESULTS.md"

Row = tuple[str, str, str, str, str]  # figure, gaia-db, baseline, goal, met


def _ms(value: float) -> str:
    return f"{value:.1f}"


def _triple(p: online.Phase) -> str:
    return f"{_ms(p.p50_ms)} / {_ms(p.p99_ms)} / {_ms(p.max_ms)} ms"


def _psql(run: release_bench.PsqlRun) -> str:
    return f"{run.seconds:.2f} s" if run.ok else f"fails after {run.seconds:.2f} s ({run.error})"


def _writes(v: online.Variant) -> str:
    return f"{v.during.failed} of {v.during.writes} failed; {_triple(v.during)} ({v.build_seconds:.1f} s)"


def pattern_rows(figures: list[patterns.PatternFigures], rows: int, rate: float, rounds: int) -> list[Row]:
    table: list[Row] = []
    for f in figures:
        met = f.helper.during.failed == 0 and f.helper.before.failed == 0 and f.helper.during.max_ms <= 50
        table.append((f"{PATTERN} {f.name} ({rows:,} rows, {rate:g} writes/s, {rounds} rounds): failed writes; "
                      "p50 / p99 / max during (duration)", f"helper: {_writes(f.helper)}", f"naive: {_writes(f.naive)}",
                      PATTERN_GOAL, "yes" if met else "no"))
    return table


def database_rows(rows: int, rate: float, before_seconds: float, rounds: int,
                  pattern_rounds: int) -> tuple[list[Row], str]:
    from pgserver import PgServer, server_bindir

    server = PgServer(extra_conf={"log_connections": "on", "max_wal_size": "'4GB'"}).start()
    try:
        version = subprocess.run([str(server_bindir() / "postgres"), "--version"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        with tempfile.TemporaryDirectory() as workdir:
            figures = release_bench.measure(server, Path(workdir))
        lines = online.measure(server, rows, rate, before_seconds, rounds)
        changes = patterns.measure(server, rows, rate, min(before_seconds, 2.0), pattern_rounds)
    finally:
        server.stop()

    n = release_bench.NOOP_DIFFS
    ours, plain = lines.release, lines.plain
    ratio = ours.during.p99_ms / ours.before.p99_ms
    table: list[Row] = [
        (NOOP, f"{figures.diff_connections} in {n} diffs ({figures.diff_ms:.1f} ms each)",
         f"{figures.seed_fresh.connections} per run (seed init script: a psql session every deploy)", "0",
         "yes" if figures.diff_connections == 0 else "no"),
        (FRESH, f"{figures.fresh_seconds:.2f} s", f"psql -f seed SQL: {_psql(figures.seed_fresh)}", "", ""),
        (AGAIN, f"{figures.again_seconds:.2f} s (no-op)", f"psql -f again: {_psql(figures.seed_again)}", "", ""),
        (f"{FAILED} ({lines.rows:,} rows, {rate:g} writes/s, {online.WRITE_TIMEOUT_MS} ms timeout, "
         f"{lines.rounds} rounds)",
         f"{ours.during.failed} of {ours.during.writes}", f"plain CREATE INDEX: {plain.during.failed} of "
         f"{plain.during.writes}", "0", "yes" if ours.during.failed == 0 and ours.before.failed == 0 else "no"),
        (BEFORE, _triple(ours.before), _triple(plain.before), "", ""),
        (DURING, _triple(ours.during), _triple(plain.during), "p99 ≤ 2x before",
         f"{'yes' if ratio <= 2 else 'no'} ({ratio:.2f}x)"),
        (SPREAD, f"{_ms(ours.p99_spread[0])} to {_ms(ours.p99_spread[1])} ms",
         f"{_ms(plain.p99_spread[0])} to {_ms(plain.p99_spread[1])} ms", "", ""),
        (BUILD, f"{ours.build_seconds:.2f} s", f"{plain.build_seconds:.2f} s", "", ""),
    ]
    table += pattern_rows(changes, rows, rate, pattern_rounds)
    return table, version


def evaluation_rows(repeats: int) -> list[Row]:
    baseline = evaluation.measure(["--single-rds"], repeats)
    shown = f"{baseline.seconds:.2f} s / {baseline.peak_mb:.0f} MB"
    table: list[Row] = []
    variants = [([stack, provider], f"{stack} ({provider})") for stack, provider in STACKS]
    for args, label in variants:
        m = evaluation.measure(args, repeats)
        time_ratio, memory_ratio = m.seconds / baseline.seconds, m.peak_mb / baseline.peak_mb
        met = "yes" if max(time_ratio, memory_ratio) <= 1.3 else "no"
        table.append((f"{EVAL} {label}: wall / peak memory", f"{m.seconds:.2f} s / {m.peak_mb:.0f} MB",
                      f"one aws.rds.Instance: {shown}", "≤ 1.3x", f"{met} ({time_ratio:.2f}x / {memory_ratio:.2f}x)"))
    bare = evaluation.measure(["--import", "pulumi_aws.rds:Instance"], repeats)
    ec2 = evaluation.measure(["--import", "pulumi_aws.rds:Instance", "pulumi_aws.ec2:SecurityGroup"], repeats)
    table.append((IMPORT_ROW, f"+{ec2.seconds - bare.seconds:.2f} s / +{ec2.peak_mb - bare.peak_mb:.0f} MB",
                  f"pulumi_aws.rds.Instance alone: {bare.seconds:.2f} s / {bare.peak_mb:.0f} MB", "", ""))
    return table


def render(rows: list[Row]) -> str:
    header = ("figure", "gaia-db", "baseline", "goal", "met")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine(pg_version: str) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal"))
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{os.cpu_count()} CPUs ({cpu}), {memory_kb / 1024**2:.0f} GiB memory, {pg_version}, "
            f"Python {platform.python_version()}, {today}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="chat_messages rows for figure 3")
    parser.add_argument("--quick", action="store_true", help="CI smoke size: 2,000 rows, short phases, one repeat")
    parser.add_argument("--rate", type=float, default=200, help="writer inserts per second (figure 3)")
    parser.add_argument("--rounds", type=int, default=3, help="index builds per variant, samples pooled (figure 3)")
    parser.add_argument("--pattern-rounds", type=int, default=3, help="runs per variant and pattern (figure 5)")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.rate <= 0 or args.rounds < 1 or args.pattern_rounds < 1:
        parser.error("--rows, --rate, --rounds and --pattern-rounds must be positive")
    rows = 2_000 if args.quick else args.rows
    before = 0.3 if args.quick else 5.0  # quick: 60 writes at the default rate, 40 after the warm-up
    repeats = 1 if args.quick else 5
    rounds = 1 if args.quick else args.rounds
    pattern_rounds = 1 if args.quick else args.pattern_rounds

    table, pg_version = database_rows(rows, args.rate, before, rounds, pattern_rounds)
    table += evaluation_rows(repeats)
    command = "venv/bin/python -m bench" + (" --quick" if args.quick else
                                            f" --rows {rows} --rounds {rounds} --pattern-rounds {pattern_rounds}")
    text = render(table)
    print(text)
    print(f"\nMachine: {machine(pg_version)}")
    if args.write:
        RESULTS.write_text(
            f"# gaia-db benchmarks\n\n`{command} --write` on {machine(pg_version)}.\n\n"
            "Each figure next to its baseline from the same run (bench/run.py says how each is measured).\n\n"
            f"{text}\n"
        )
    return 0
