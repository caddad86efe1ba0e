"""Mutation runner for the method's decisions: flip each one, the fast suite must fail (``make mutate``; not in CI).

Every entry of :data:`DECISIONS` (tools/method_decisions.py) names one decision that makes WildRayZer what it is,
the exact source snippet that implements it, a replacement that flips it, and the behavioural test(s) that must
fail when it is flipped.
``docs/METHOD_DECISIONS.md`` is generated from this table (``--write-docs``);
``tests/test_method_decisions_table.py`` keeps the two in step and checks that every snippet still occurs exactly
once, so the list cannot rot silently.
:data:`CONTROLS` are further flips that the docs do not list ("flips we keep for ourselves"): other ways of breaking
the same decisions, run with ``--all`` and reported separately, without named tests (the decision test files run
first), to check that the tests pin behaviour rather than the listed snippets.

For each flip the runner applies exactly one replacement in a scratch copy of the repository (``git ls-files``:
tracked and untracked-but-not-ignored files) under /tmp, runs the flip's named tests, and only if they all pass the
whole fast suite with ``-x``; it records killed / survived, restores the file, and goes on. The scratch copy imports
its own ``wildrayzer`` (PYTHONPATH, checked at start) and never writes bytecode (a same-length flip must not be
masked by a stale ``.pyc``). It prints a table and the kill ratio and exits 1 when a flip survives or cannot be
applied.

    python tools/mutate.py            # the listed decisions
    python tools/mutate.py --all      # ... and the controls
    python tools/mutate.py --only stage3-static-pixels,psnr-filter
    python tools/mutate.py --list | --check | --write-docs
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method_decisions import CONTROLS, DECISIONS, Flip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "METHOD_DECISIONS.md"
DECISION_TESTS = ("tests/test_method_decisions_geometry.py", "tests/test_method_decisions_model.py",
                  "tests/test_method_decisions_losses.py", "tests/test_method_decisions_pseudolabel.py",
                  "tests/test_method_decisions_training.py")


# ------------------------------------------------------------------ docs


def render_docs() -> str:
    """docs/METHOD_DECISIONS.md, generated from DECISIONS."""
    lines = [
        "# WildRayZer's method decisions",
        "",
        "WildRayZer learns novel view synthesis of dynamic scenes without poses: RayZer (camera estimator, scene",
        "encoder, renderer) pretrained on static scenes, a motion-mask head trained against pseudo-masks where the",
        "frozen static model's renders disagree with the photos, and joint training that masks moving tokens with a",
        "noise token and leaves moving pixels out of the rendering loss. Each line below is one decision: what the",
        "code does, why the method needs it, and the behavioural test that fails when it is flipped. `make mutate`",
        "(`tools/mutate.py`; slow, not in `make test`) flips each one in a scratch copy and checks that the tests kill",
        "it; this page is generated from its table (`tools/method_decisions.py`; `python tools/mutate.py",
        "--write-docs`) and",
        "`tests/test_method_decisions_table.py` keeps both in step.",
        "",
        f"{len(DECISIONS)} decisions. Test ids are relative to `tests/`.",
        "",
    ]
    area = None
    for f in DECISIONS:
        if f.area != area:
            area = f.area
            lines += [f"## {area[0].upper()}{area[1:]}", "", "| id | what | why | test |", "|---|---|---|---|"]
        tests = "<br>".join(f"`{t.removeprefix('tests/')}`" for t in f.tests)
        lines.append(f"| `{f.id}` | {f.what} | {f.why} | {tests} |")
        if f is DECISIONS[-1] or DECISIONS[DECISIONS.index(f) + 1].area != area:
            lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------ checks


def check_table(root: Path = REPO, flips: list[Flip] | None = None) -> list[str]:
    """Problems with the table against the tree at ``root``: snippets not found exactly once, no-op flips, duplicate
    ids, named tests whose file or function does not exist."""
    problems, seen = [], set()
    for f in flips if flips is not None else DECISIONS + CONTROLS:
        if f.id in seen:
            problems.append(f"{f.id}: duplicate id")
        seen.add(f.id)
        path = root / f.file
        if not path.is_file():
            problems.append(f"{f.id}: {f.file} does not exist")
            continue
        text = path.read_text()
        for old, new in f.pairs():
            n = text.count(old)
            if n != 1:
                problems.append(f"{f.id}: the original snippet {old.strip()[:40]!r} occurs {n} times in {f.file} "
                                "(must be exactly once)")
            if old == new:
                problems.append(f"{f.id}: the flip changes nothing")
        for node in f.tests:
            file, _, func = node.partition("::")
            test_path = root / file
            if not test_path.is_file() or f"def {func.split('[')[0]}(" not in test_path.read_text():
                problems.append(f"{f.id}: named test {node} does not exist")
    return problems


# ------------------------------------------------------------------ runner


def scratch_copy(dest: Path) -> None:
    """Copy the repository's files (tracked + untracked, not ignored) to ``dest``."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = REPO / rel
        if not src.is_file() or "__pycache__" in rel:
            continue  # deleted in the work tree, or bytecode
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def pytest_env(root: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONDONTWRITEBYTECODE="1", WANDB_MODE="disabled", COLUMNS="400")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_pytest(root: Path, args: list[str], timeout: float) -> tuple[int, float, str]:
    """-> (exit code, seconds, output); exit code -1 on timeout."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-rfE", "-p", "no:cacheprovider", *args], cwd=root,
                           env=pytest_env(root), capture_output=True, text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else str(e.stdout or "")
        rc = -1
    return rc, time.perf_counter() - t0, out


def failure_kind(out: str) -> str:
    """What failed first, from pytest's short summary: the exception type (AssertionError when a test's assertion
    caught the flip; another type means the flip made the code raise, worth a look), or '-'."""
    for line in out.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            head = line.partition(" - ")[2].split(":")[0].strip()
            if not head or head.startswith("assert"):  # pytest shows a failed assert statement as its source
                return "AssertionError"
            return head.split(".")[-1][:24]
    return "-"


def tail(out: str, n: int = 15) -> str:
    return "\n".join(out.strip().splitlines()[-n:])


def classify(rc: int) -> str:
    return {0: "passed", 1: "failed", -1: "timeout"}.get(rc, f"error (pytest exit {rc})")


def mutate(root: Path, flip: Flip, full_suite: bool, timeout: float, verbose: bool) -> dict:
    path = root / flip.file
    original = path.read_text()
    if any(original.count(old) != 1 for old, _ in flip.pairs()):
        return {"flip": flip, "result": "STALE", "by": "-", "how": "-", "seconds": 0.0}
    mutated = original
    for old, new in flip.pairs():
        mutated = mutated.replace(old, new)
    path.write_text(mutated)
    try:
        named = list(flip.tests) or list(DECISION_TESTS)
        rc, secs, out = run_pytest(root, named, timeout)
        by = "named tests" if flip.tests else "decision tests"
        if rc == 0 and full_suite:
            rc, more, out = run_pytest(root, [], timeout)
            secs += more
            by = "fast suite"
    finally:
        path.write_text(original)
    result = {"failed": "killed", "timeout": "killed", "passed": "SURVIVED"}.get(classify(rc), "ERROR")
    how = "timeout" if rc == -1 else failure_kind(out)
    if verbose or result != "killed":
        print(f"--- {flip.id}: {classify(rc)} ({by})\n{tail(out)}\n", flush=True)
    return {"flip": flip, "result": result, "by": by, "how": how, "seconds": secs}


def print_table(title: str, rows: list[dict]) -> tuple[int, int]:
    if not rows:
        return 0, 0
    w_id = max(len(r["flip"].id) for r in rows)
    w_file = max(len(r["flip"].file) for r in rows)
    print(f"\n{title}")
    print(f"{'decision':<{w_id}}  {'file':<{w_file}}  {'result':<8}  {'decided by':<14}  {'first failure':<24}  "
          "seconds")
    for r in rows:
        print(f"{r['flip'].id:<{w_id}}  {r['flip'].file:<{w_file}}  {r['result']:<8}  {r['by']:<14}  "
              f"{r['how']:<24}  {r['seconds']:.1f}")
    killed = sum(r["result"] == "killed" for r in rows)
    print(f"{title}: {killed}/{len(rows)} killed ({100.0 * killed / len(rows):.1f} %)")
    return killed, len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="also run the control flips (not listed in the docs)")
    ap.add_argument("--controls", action="store_true", help="run the control flips only")
    ap.add_argument("--only", default="", help="comma-separated decision ids")
    ap.add_argument("--named-only", action="store_true", help="never fall back to the whole fast suite")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per pytest run")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copy")
    ap.add_argument("--verbose", action="store_true", help="print pytest's tail for every flip")
    ap.add_argument("--list", action="store_true", help="print the decisions and exit")
    ap.add_argument("--check", action="store_true", help="check the table against the tree and exit")
    ap.add_argument("--write-docs", action="store_true", help=f"write {DOCS.relative_to(REPO)} and exit")
    args = ap.parse_args(argv)

    if args.write_docs:
        DOCS.write_text(render_docs())
        print(f"wrote {DOCS.relative_to(REPO)} ({len(DECISIONS)} decisions)")
        return 0
    if args.list:
        for f in DECISIONS + (CONTROLS if args.all else []):
            print(f"{f.id:<28} {f.file:<34} {f.what}")
        return 0
    problems = check_table()
    if problems:
        print("the decision table does not match the tree:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.check:
        print(f"{len(DECISIONS)} decisions and {len(CONTROLS)} controls match the tree")
        return 0

    listed = [] if args.controls else DECISIONS
    controls = CONTROLS if (args.all or args.controls) else []
    if args.only:
        ids = set(args.only.split(","))
        unknown = ids - {f.id for f in DECISIONS + CONTROLS}
        if unknown:
            print(f"unknown decision ids: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        listed = [f for f in DECISIONS if f.id in ids]
        controls = [f for f in CONTROLS if f.id in ids]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still removes its scratch copy
    root = Path(tempfile.mkdtemp(prefix="wildrayzer-mutate-"))
    t0 = time.perf_counter()
    try:
        scratch_copy(root)
        where = subprocess.run([sys.executable, "-c", "import wildrayzer; print(wildrayzer.__file__)"], cwd=root,
                               env=pytest_env(root), capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(root)):
            print(f"the scratch copy imports wildrayzer from {where or '?'}, not from {root}", file=sys.stderr)
            return 2
        baseline = sorted({t for f in listed + controls for t in f.tests} | set(DECISION_TESTS))
        rc, secs, out = run_pytest(root, baseline, args.timeout)
        if rc != 0:
            print(f"the unmutated scratch copy fails its decision tests ({classify(rc)}):\n{tail(out)}",
                  file=sys.stderr)
            return 2
        print(f"scratch copy {root}: decision tests pass unmutated ({secs:.0f} s); "
              f"{len(listed)} listed flips, {len(controls)} controls", flush=True)
        rows = []
        for f in listed + controls:
            rows.append(mutate(root, f, not args.named_only, args.timeout, args.verbose))
            r = rows[-1]
            print(f"  {f.id:<28} {r['result']:<8} {r['by']:<14} {r['how']:<24} {r['seconds']:5.1f} s", flush=True)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    k1, n1 = print_table("listed decisions", [r for r in rows if r["flip"] in listed])
    k2, n2 = print_table("controls (not listed)", [r for r in rows if r["flip"] in controls])
    print(f"\ntotal: {k1 + k2}/{n1 + n2} killed in {time.perf_counter() - t0:.0f} s")
    return 0 if (k1, k2) == (n1, n2) else 1


if __name__ == "__main__":
    sys.exit(main())
