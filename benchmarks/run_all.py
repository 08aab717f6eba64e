"""Regenerate docs/results.md: run every benchmark script, keep its output, assemble the report.

    python benchmarks/run_all.py                 # run everything (about 1.5 hours on 2 cores)
    python benchmarks/run_all.py --only core,fwht
    python benchmarks/run_all.py --assemble      # rebuild docs/results.md from the saved logs

Each script's stdout goes to ``bench-out/logs/<name>.txt``; its plots stay under ``bench-out/``
and are copied into ``docs/results/``. docs/results.md then shows, per section, the command, the
date it ran and its tables verbatim, beside the paper's reference numbers and our reading of the
differences (benchmarks/results_notes.md, kept by hand next to the numbers it discusses).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "bench-out" / "logs"
FIGS = ROOT / "docs" / "results"

#: name -> (section title, command args after the script, plots to copy (globs under the repo))
RUNS = {
    "core": ("1a. Speed on the reference backend vs D (numpy, array-API kernels)",
             ["benchmarks/bench_core.py"], []),
    "fwht": ("1b. FWHT against FFHT, fht-cpu and the memory floor", ["benchmarks/bench_fwht.py"], []),
    "backends": ("1c. Every backend against the copy floor, vs D and vs N; dense and sparse projections; memory",
                 ["benchmarks/bench_backends.py", "--out", "bench-out/backends"],
                 ["bench-out/backends/*.png"]),
    "gradients": ("1d. Per-example gradients with and without sketching (GPT-2 config model)",
                  ["benchmarks/bench_gradients.py", "--out", "bench-out/gradients"],
                  ["bench-out/gradients/*.png"]),
    "factored": ("1e. Factored gradient sketches: throughput, memory, accuracy, a peer, "
                 "GPT-2-small scale", ["benchmarks/bench_factored.py", "--threads", "1",
                                       "--out", "bench-out/factored"], []),
    "tda": ("2. Accuracy: gradient inner products (TDA) vs exact; layer selection",
            ["benchmarks/bench_tda.py", "--out", "bench-out/tda"], ["bench-out/tda/*/*.png"]),
    "sketches_extra": ("2b. SJLT and SRHT beside the paper's sketches (time, accuracy); the "
                       "evidence behind out_dim='auto'; SketchProjection vs scikit-learn",
                       ["benchmarks/bench_sketches_extra.py"], []),
    "spectrum": ("3. Eigenvalues: Table-7-style error; memory; evolution over training",
                 ["benchmarks/bench_spectrum.py", "--out", "bench-out/spectrum"],
                 ["bench-out/spectrum/*.png"]),
    "intrinsic_dim": ("4. Intrinsic dimension D* per seed",
                      ["benchmarks/bench_intrinsic_dim.py", "--out", "bench-out/intrinsic_dim"],
                      ["bench-out/intrinsic_dim/*.png"]),
    "memory": ("5. Memory: peak extra memory of one apply per backend and algorithm (the dense "
               "and scikit-learn baselines: section 1c, part (c))",
               ["benchmarks/bench_memory.py"], []),
    "trak": ("6. TRAK side by side with traker: agreement, time, LDS vs D and ensemble size",
             ["benchmarks/bench_trak.py", "--out", "bench-out/trak"], ["bench-out/trak/*.png"]),
}


def commit() -> str:
    """The checkout's commit, with "+local changes" when tracked files differ from it (the
    numbers then belong to no commit exactly), or "unknown" outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" +local changes" if dirty.strip() else "")


#: scripts that can reprint the parts an earlier, interrupted run finished (``--resume``)
RESUMABLE = {"factored"}


def run(name: str, resume: bool = False) -> None:
    title, args, _ = RUNS[name]
    if resume and name in RESUMABLE:
        args = [*args, "--resume"]
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{name}.txt"
    print(f"== {name}: python {' '.join(args)}", flush=True)
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    with log.open("w") as fh:
        fh.write(f"# command: python {' '.join(args)}\n# date: {started}\n"
                 f"# commit: {commit()}\n")
        fh.flush()
        # no progress bars or library warnings interleaved with the tables
        env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        for line in proc.stdout:
            if "\r" in line or "%|" in line:  # progress bars: show, don't keep
                print(line.rstrip()[-120:], flush=True)
                continue
            sys.stdout.write(line)
            fh.write(line)
        proc.wait()
        fh.write(f"# exit code: {proc.returncode}\n")


def read_notes(path: Path) -> dict[str, str]:
    """benchmarks/results_notes.md split at its ``## <name>`` headings (``intro`` or a name of
    RUNS): each part is printed after that section's tables."""
    if not path.exists():
        return {}
    parts: dict[str, list[str]] = {"intro": []}
    key = "intro"
    for line in path.read_text().splitlines():
        if line.startswith("## ") and line[3:].strip() in {"intro", *RUNS}:
            key = line[3:].strip()
            parts[key] = []
        else:
            parts[key].append(line)
    return {k: "\n".join(v).strip() for k, v in parts.items()}


def kept_logs(path: Path) -> dict[str, str]:
    """The verbatim block under each ``## <number>. ...`` heading of an existing results.md, by
    section number: a section whose log is not on this machine (bench-out/ is not versioned) is
    kept as it was instead of being dropped."""
    if not path.exists():
        return {}
    found = {}
    for m in re.finditer(r"^## (\S+) .*?\n\n```\n(.*?)\n```", path.read_text(), flags=re.M | re.S):
        found[m.group(1)] = m.group(2)
    return found


def section_logs() -> dict[str, str]:
    """name -> log text for every section: this machine's log, else the block kept in
    docs/results.md."""
    kept = kept_logs(ROOT / "docs" / "results.md")
    out = {}
    for name, (title, _, _) in RUNS.items():
        log = LOGS / f"{name}.txt"
        if log.exists():
            out[name] = log.read_text()
        elif title.split(" ", 1)[0] in kept:
            out[name] = kept[title.split(" ", 1)[0]]
    return out


def log_field(text: str, field: str) -> str | None:
    m = re.search(rf"^# {field}: (.*)$", text, flags=re.M)
    return m.group(1).strip() if m else None


def provenance() -> list[str]:
    """A table of the commit and date each section was measured at; when they differ, a line
    that says so (sections measured at different code are not silently spliced together)."""
    rows, commits = [], set()
    logs = section_logs()
    for name, (title, _, _) in RUNS.items():
        if name not in logs:
            continue
        text = logs[name]
        c = log_field(text, "commit") or "not recorded (measured before commits were logged)"
        commits.add(c)
        rows.append(f"| {title.split(' ', 1)[0]} | {log_field(text, 'date') or '?'} | {c} |")
    if not rows:
        return []
    lines = ["| section | measured | commit |", "|---|---|---|", *rows, ""]
    if len(commits) > 1:
        lines += [f"The sections were measured at {len(commits)} different states of the code "
                  "(table above): a section's numbers describe the code of its own commit; "
                  "where a later commit changed what a section measures, its reading says so.",
                  ""]
    return lines


def assemble() -> Path:
    FIGS.mkdir(parents=True, exist_ok=True)
    notes = (ROOT / "benchmarks" / "results_notes.md")
    out = ["# Results", "",
           f"Measured on this project's CPU machine: {platform.system()} {platform.machine()}, "
           f"{os.cpu_count()} cores, no GPU. Regenerate everything with "
           "`python benchmarks/run_all.py` (the tables below are that command's output, verbatim; "
           "each section names its own command and date). Timings on a shared 2-core VM are noisy: "
           "compare within a table, not across tables.", ""]
    commentary = read_notes(notes)
    if commentary.get("intro"):
        out += [commentary["intro"], ""]
    out += provenance()
    logs = section_logs()
    for name, (title, args, plots) in RUNS.items():
        out += [f"## {title}", ""]
        if name not in logs:
            out += [f"Not run yet: `python {' '.join(args)}`.", ""]
            continue
        text = re.sub(r"\n\s*\n(\s*\n)+", "\n\n", logs[name]).rstrip()  # cleared bars
        out += ["```", text, "```", ""]
        for pattern in plots:
            for png in sorted(ROOT.glob(pattern)):
                dest = FIGS / f"{name}-{png.parent.name}-{png.name}"
                shutil.copyfile(png, dest)
                out += [f"![{png.stem}](results/{dest.name})", ""]
        if commentary.get(name):
            out += [f"**Reading {name}.** " + commentary[name], ""]
    # the GPU section comes from a GPU machine's run saved under docs/results/gpu (see
    # benchmarks/gpu_report.py), or says that the check has not run on a GPU yet
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_report import section as gpu_section

    out += [gpu_section(FIGS / "gpu"), ""]
    path = ROOT / "docs" / "results.md"
    path.write_text("\n".join(out))
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(RUNS)}")
    p.add_argument("--assemble", action="store_true", help="only rebuild docs/results.md from logs")
    p.add_argument("--resume", action="store_true",
                   help=f"let {', '.join(sorted(RESUMABLE))} reprint the parts an earlier run "
                   "finished under bench-out/ instead of measuring them again")
    args = p.parse_args(argv)
    if not args.assemble:
        names = args.only.split(",") if args.only else list(RUNS)
        bad = [n for n in names if n not in RUNS]
        if bad:
            raise SystemExit(f"unknown benchmark(s) {bad}; choose from {list(RUNS)}")
        for name in names:
            run(name, resume=args.resume)
    print(f"wrote {assemble()}")


if __name__ == "__main__":
    main()
