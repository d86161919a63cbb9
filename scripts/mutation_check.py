"""The project's mutation check: does the test suite notice when one behaviour that matters breaks?

Each mutation in `scripts/mutations.toml` is an exact edit of one line of behaviour (old text -> new text, where the
old text occurs exactly once in its file) and the tests that must fail because of it. This copies the project
(`git archive HEAD`, i.e. what `git ls-files` lists, or with --worktree the working tree; plus a symlink to venv/)
into a scratch directory per worker, applies each mutation alone, runs its
tests (`python -m pytest -q -x -p no:randomly -n 0 <tests>`), restores the file, and prints the kill rate and every
survivor. A mutation whose old text no longer occurs exactly once is reported as stale, never silently skipped.

    bash scripts/mutation-check                  # every mutation (minutes; not part of .ci/run)
    bash scripts/mutation-check ID [ID ...]      # only these
    bash scripts/mutation-check --list           # the list, and whether each old text is still found
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTATIONS = ROOT / "scripts" / "mutations.toml"
TIMEOUT_SECONDS = 900
# pytest's exit codes: 1 tests failed, 2 interrupted (a collection error counts: the mutation broke an import).
KILLED_CODES = (1, 2)


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # killed | survived | stale | error
    seconds: float = 0.0
    detail: str = ""
    output: list[str] = field(default_factory=list)


def load(path: Path = MUTATIONS) -> list[Mutation]:
    data = tomllib.loads(path.read_text())
    mutations = []
    seen: set[str] = set()
    for entry in data["mutation"]:
        mutation = Mutation(entry["id"], entry["file"], entry["old"], entry["new"], tuple(entry["tests"]),
                            entry["why"])
        if mutation.id in seen:
            raise SystemExit(f"mutation id {mutation.id} appears twice in {path.name}")
        if mutation.old == mutation.new or not mutation.tests:
            raise SystemExit(f"mutation {mutation.id} changes nothing or names no tests")
        seen.add(mutation.id)
        mutations.append(mutation)
    return mutations


def stale_reason(root: Path, mutation: Mutation) -> str | None:
    """Why the mutation cannot be applied to the tree at `root`, or None."""
    path = root / mutation.file
    if not path.is_file():
        return f"{mutation.file} does not exist"
    count = path.read_text().count(mutation.old)
    if count == 0:
        return f"its old text no longer occurs in {mutation.file}"
    if count > 1:
        return f"its old text occurs {count} times in {mutation.file} (ambiguous)"
    return None


def project_files() -> list[str]:
    """Tracked files and new files not ignored (another engineer's module in progress), as they are on disk."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return sorted({name for name in listed if name and (ROOT / name).is_file() and not name.startswith("venv/")})


def copy_project(destination: Path, revision: str | None) -> None:
    """The project at `revision` (a commit: `git archive`, what `git ls-files` lists there), or with None the
    working tree as it is on disk, uncommitted edits included; plus a symlink to venv/."""
    destination.mkdir(parents=True)
    if revision is not None:
        archive = subprocess.run(["git", "archive", "--format=tar", revision], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
    else:
        for name in project_files():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
    (destination / "venv").symlink_to(ROOT / "venv")


def run_tests(root: Path, tests: tuple[str, ...]) -> tuple[int, list[str], float]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # a restored file must never be read from a stale .pyc
    env.pop("PYTEST_ADDOPTS", None)
    argv = [str(root / "venv" / "bin" / "python"), "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-n", "0",
            "--no-header", "--tb=line", *tests]
    started = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return -1, [f"timed out after {TIMEOUT_SECONDS} s"], time.monotonic() - started
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, lines, time.monotonic() - started


def mutate_and_test(root: Path, mutation: Mutation) -> Outcome:
    reason = stale_reason(root, mutation)
    if reason is not None:
        return Outcome(mutation, "stale", detail=reason)
    path = root / mutation.file
    original = path.read_bytes()
    path.write_text(original.decode().replace(mutation.old, mutation.new))
    try:
        code, lines, seconds = run_tests(root, mutation.tests)
    finally:
        path.write_bytes(original)
    if code in KILLED_CODES or code == -1:
        failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))] or lines[-3:]
        return Outcome(mutation, "killed", seconds, failed[0][:160] if failed else "", lines)
    if code == 0:
        return Outcome(mutation, "survived", seconds, lines[-1] if lines else "", lines)
    return Outcome(mutation, "error", seconds, f"pytest exited {code}: {' | '.join(lines[-3:])}", lines)


def baseline(root: Path, mutations: list[Mutation]) -> list[str]:
    """The unmutated project must pass every selected test, or a 'kill' would mean nothing."""
    tests = sorted({test for m in mutations for test in m.tests})
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    argv = [str(root / "venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:randomly", "--no-header",
            "--tb=line", *tests]  # xdist's -n auto from pyproject: the union is most of the suite
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS * 2)
    if done.returncode == 0:
        return []
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][-25:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ids", nargs="*", help="run only these mutations")
    parser.add_argument("--list", action="store_true", help="list the mutations and whether each still applies")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutations tested at once")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the selected tests")
    parser.add_argument("--revision", default="HEAD",
                        help="the commit to test (default HEAD: others' uncommitted work never counts)")
    parser.add_argument("--worktree", action="store_true", help="test the working tree, uncommitted edits included")
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    parser.add_argument("--verbose", action="store_true", help="print pytest's output for survivors and errors")
    args = parser.parse_args(argv)

    mutations = load()
    if args.ids:
        unknown = sorted(set(args.ids) - {m.id for m in mutations})
        if unknown:
            parser.error(f"no mutation named {', '.join(unknown)}")
        mutations = [m for m in mutations if m.id in args.ids]
    if args.list:
        for m in mutations:
            reason = stale_reason(ROOT, m)  # against the working tree: what the next commit will be
            print(f"{'STALE ' if reason else ''}{m.id:44} {m.file:40} {m.why}" + (f" [{reason}]" if reason else ""))
        print(f"{len(mutations)} mutations in {len({m.file for m in mutations})} files")
        return 0

    started = time.monotonic()
    jobs = max(1, min(args.jobs, len(mutations)))
    revision = None
    if not args.worktree:
        revision = subprocess.run(["git", "rev-parse", "--verify", f"{args.revision}^{{commit}}"], cwd=ROOT,
                                  capture_output=True, text=True, check=True).stdout.strip()
    print(f"testing {'the working tree' if revision is None else 'commit ' + revision[:12]}: {len(mutations)} "
          f"mutations, {jobs} worker(s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="gaia-db-mutation-") as scratch:
        roots = [Path(scratch) / f"w{i}" for i in range(jobs)]
        for root in roots:
            copy_project(root, revision)
        if not args.no_baseline:
            print(f"baseline: the selected tests on the unmutated copy ({len(mutations)} mutations)", flush=True)
            failing = baseline(roots[0], mutations)
            if failing:
                print("the unmutated project fails the selected tests, so no kill would mean anything:",
                      file=sys.stderr)
                print("\n".join(failing), file=sys.stderr)
                return 2
            print(f"baseline passed in {time.monotonic() - started:.0f} s", flush=True)
        todo: queue.Queue[Mutation] = queue.Queue()
        for m in mutations:
            todo.put(m)
        outcomes: list[Outcome] = []
        lock = threading.Lock()

        def worker(root: Path) -> None:
            while True:
                try:
                    m = todo.get_nowait()
                except queue.Empty:
                    return
                outcome = mutate_and_test(root, m)
                with lock:
                    outcomes.append(outcome)
                    print(f"[{len(outcomes):3}/{len(mutations)}] {outcome.status.upper():8} {m.id} "
                          f"({outcome.seconds:.0f} s) {outcome.detail if outcome.status != 'killed' else ''}",
                          flush=True)

        threads = [threading.Thread(target=worker, args=(root,)) for root in roots]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    order = {m.id: i for i, m in enumerate(mutations)}
    outcomes.sort(key=lambda o: order[o.mutation.id])
    by = {status: [o for o in outcomes if o.status == status] for status in ("killed", "survived", "stale", "error")}
    judged = len(by["killed"]) + len(by["survived"])
    elapsed = time.monotonic() - started
    print()
    for status in ("survived", "stale", "error"):
        for o in by[status]:
            m = o.mutation
            print(f"{status.upper()}: {m.id} in {m.file}: {m.why}")
            print(f"    - {m.old.strip()[:110]}\n    + {m.new.strip()[:110]}")
            print(f"    tests: {' '.join(m.tests)}" + (f"\n    {o.detail}" if o.detail else ""))
            if args.verbose and status != "stale":
                print("\n".join("    | " + line for line in o.output[-30:]))
    rate = 100.0 * len(by["killed"]) / judged if judged else 0.0
    print(f"\nkill rate: {len(by['killed'])}/{judged} = {rate:.1f} % ({len(by['survived'])} survived, "
          f"{len(by['stale'])} stale, {len(by['error'])} errors) in {elapsed:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([
            {"id": o.mutation.id, "file": o.mutation.file, "status": o.status, "seconds": round(o.seconds, 1),
             "detail": o.detail} for o in outcomes
        ], indent=2) + "\n")
    return 0 if not (by["survived"] or by["stale"] or by["error"]) else 1


if __name__ == "__main__":
    sys.exit(main())
