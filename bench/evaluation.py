"""Figure 4: wall time and peak memory of evaluating a stack under the mock engine, each in a fresh process.

`python -m bench.evaluation STACK PROVIDER` evaluates the real program (tests/program.py); `... --single-rds`
evaluates a program that declares one `aws.rds.Instance`, through the same harness; `... --import MODULE` only
imports MODULE.
"""

from __future__ import annotations

import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import ROOT

SINGLE_RDS = '''import pulumi_aws as aws

aws.rds.Instance("db", engine="postgres", engine_version="16", instance_class="db.t4g.micro", allocated_storage=10,
                 username="gaia", password="0123456789abcdefghij", skip_final_snapshot=True)
'''


@dataclass(frozen=True)
class Measure:
    seconds: float  # median wall time of the whole process: interpreter, imports, evaluation
    peak_mb: float  # median peak resident memory of the process


def child(argv: list[str]) -> None:
    if argv[:1] == ["--import"]:  # what imports cost a process, for the breakdown row: module:attribute ...
        for spec in argv[1:]:
            module, _, attribute = spec.partition(":")
            loaded = importlib.import_module(module)
            if attribute:  # pulumi_aws loads a submodule's classes on first use, not on import
                getattr(loaded, attribute)
        print(peak_mb())
        return
    import program

    if argv == ["--single-rds"]:
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "__main__.py").write_text(SINGLE_RDS)
            evaluation = program.evaluate("dev", {}, program=Path(directory, "__main__.py"))
    else:
        stack, provider = argv
        evaluation = program.evaluate(stack, program.provider_config(stack, provider))
    if not evaluation.resources:
        raise SystemExit("the program declared no resources")
    print(peak_mb())


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM starts afresh at exec, unlike ru_maxrss, which a child inherits
    from its parent's fork)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def measure(args: list[str], repeats: int) -> Measure:
    walls, peaks = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bench.evaluation", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"evaluating {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
        peaks.append(float(done.stdout.strip().splitlines()[-1]))
    return Measure(statistics.median(walls), statistics.median(peaks))


if __name__ == "__main__":
    child(sys.argv[1:])
