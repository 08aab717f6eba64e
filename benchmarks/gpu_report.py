"""The GPU section of docs/results.md, from the output folder of benchmarks/gpu_check.py.

    python benchmarks/gpu_report.py --from DIR                      # print the section
    python benchmarks/gpu_report.py --from DIR --save docs/results/gpu --write docs/results.md

``--save`` keeps the run's data (env.json, kernels.json, gradients.json, tests.txt) under
docs/results/gpu/, from which ``benchmarks/run_all.py --assemble`` rebuilds the section;
``--write`` replaces the section in docs/results.md (or appends it). Without a run the section
says that the check is prepared and has not run on a GPU, with the command to run it.

The same module renders gpu_check's plain-text tables (kernels.txt, gradients.txt).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

TITLE = "7. GPU: every GPU path against the reference; kernels against the HBM copy floor"
#: how the section's heading is found again, whatever number it has
HEADING = re.compile(r"^## (?:\d+[a-z]?\. )?GPU: every GPU path.*$", re.MULTILINE)
SAVED = ("env.json", "kernels.json", "gradients.json", "tests.txt")
#: the paper's Table 11 (V100), as the issue quotes it
PAPER = ("the paper's Table 11 (V100): affd 207-219 ms, flat in D from 2^12 to 2^18; TRAK's "
         "dense CUDA kernel (fast_jl) 359 -> 15,500 ms from D = 2^12 to 2^18")
COMMAND = "bash benchmarks/gpu_check.sh"
FLAT_RATIO = 1.3  # t(max D) / t(min D) that still counts as flat in D
FLOOR_RATIO = 3.0  # affd/afjl at the largest N within this multiple of one copy
SPEEDUP = 10.0  # over fast_jl at D = 2^16
AGREE = 1e-4  # largest output difference between backends, relative to the largest output


# ---- small helpers -------------------------------------------------------------------------------
def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head)] + [line(r) for r in rows])


def _rows(data: dict, kind: str) -> list[dict]:
    return [r for r in data.get("rows", []) if r.get("kind") == kind and "ms" in r]


def _sizes(data: dict) -> dict:
    return data.get("meta", {}).get("sizes", {})


def copy_floor(data: dict) -> dict:
    """{(log_n, batch): fastest copy in ms over the implementations}."""
    out: dict = {}
    for r in _rows(data, "copy"):
        k = (r["log_n"], r["batch"])
        out[k] = min(out.get(k, float("inf")), r["ms"])
    return out


# ---- kernels.txt ---------------------------------------------------------------------------------
def kernels_text(data: dict) -> str:
    if not data:
        return "# no kernel results (the stage did not run)\n"
    meta = data.get("meta", {})
    impls = meta.get("implementations", {})
    out = [f"# kernels on {meta.get('device', '?')}; float32; timers: "
           + ", ".join(f"{k} ({v})" for k, v in impls.items())]
    for k, v in meta.get("not_usable", {}).items():
        out.append(f"# not timed: {k}: {v}")
    for k, v in meta.get("baselines", {}).items():
        out.append(f"# baseline {k}: {v}")
    floor = copy_floor(data)
    copies = _rows(data, "copy")
    if copies:
        out += ["", "## copy floor: one device-to-device copy of the input (median ms; GB/s "
                "counts bytes read + written)"]
        out.append(_table(["impl", "N", "batch", "ms", "GB/s"], [
            [r["impl"], f"2^{r['log_n']}", str(r["batch"]), _ms(r["ms"]),
             f"{2 * 4 * r['batch'] * 2 ** r['log_n'] / r['ms'] / 1e6:.0f}"] for r in copies]))
    sk = _rows(data, "sketch")
    groups = sorted({(r["log_n"], r["batch"]) for r in sk}, key=lambda g: (g[1], -g[0]))
    for log_n, batch in groups:
        rows = [r for r in sk if r["log_n"] == log_n and r["batch"] == batch]
        lds = sorted({r["log_d"] for r in rows})
        fl = floor.get((log_n, batch))
        out += ["", f"## sketches at N = 2^{log_n}, batch {batch} (median ms per call; "
                f"x copy = slowest D / copy floor {_ms(fl)} ms; agree = largest difference to "
                "the first backend, relative to the largest output)"]
        body = []
        for algo in sorted({r["algo"] for r in rows}):
            for impl in [i for i in impls if any(r["impl"] == i and r["algo"] == algo
                                                 for r in rows)]:
                by_d = {r["log_d"]: r for r in rows if r["algo"] == algo and r["impl"] == impl}
                ts = [by_d[d]["ms"] if d in by_d else None for d in lds]
                got = [t for t in ts if t is not None]
                flat = (f"{by_d[max(by_d)]['ms'] / by_d[min(by_d)]['ms']:.2f}"
                        if len(by_d) > 1 else "-")
                xcopy = f"{max(got) / fl:.1f}" if fl and got else "-"
                agree = [r["agree"] for r in by_d.values() if "agree" in r]
                body.append([algo, impl, *[_ms(t) for t in ts], flat, xcopy,
                             f"{max(agree):.1e}" if agree else "-"])
        out.append(_table(["algo", "impl", *[f"D=2^{d}" for d in lds], "t(maxD)/t(minD)",
                           "x copy", "agree"], body))
    base = _rows(data, "baseline")
    if base:
        out += ["", "## baselines: O(N D) dense projections (median ms per call)"]
        names = {"fast_jl": "fast_jl (TRAK CUDA, Rademacher)",
                 "dense_torch": "dense, torch.randn blocks + matmul"}
        lds = sorted({r["log_d"] for r in base})
        body = []
        for key in sorted({(r["algo"], r["log_n"], r["batch"]) for r in base}):
            by_d = {r["log_d"]: r["ms"] for r in base if (r["algo"], r["log_n"], r["batch"]) == key}
            body.append([names.get(key[0], key[0]), f"2^{key[1]}", str(key[2]),
                         *[_ms(by_d.get(d)) for d in lds]])
        out.append(_table(["baseline", "N", "batch", *[f"D=2^{d}" for d in lds]], body))
    fw = _rows(data, "fwht")
    if fw:
        out += ["", "## FWHT (unnormalized) of N floats cut into rows (median ms; GB/s counts one "
                "read + one write of the data; fast-hadamard-transform beside torch where built)"]
        body = []
        for r in fw:
            n = 2 ** r["log_n"]
            alt = r.get("fast_hadamard_transform")
            body.append([r["impl"], f"2^{r['log_n']}", f"{n >> r['row_log']} x 2^{r['row_log']}",
                         _ms(r["ms"]), f"{8 * n / r['ms'] / 1e6:.0f}",
                         _ms(alt["ms"]) if alt else "-",
                         f"{alt['agree']:.1e}" if alt and "agree" in alt else "-"])
        out.append(_table(["impl", "N", "shape", "ms", "GB/s", "fast-hadamard-transform ms",
                           "agree"], body))
    errors = [r for r in data.get("rows", []) if r.get("kind") == "error"]
    if errors:
        out += ["", "## errors"]
        for r in errors:
            what = " ".join(f"{k}={r[k]}" for k in ("algo", "log_n", "log_d", "batch") if k in r)
            out.append(f"{r.get('impl', '?')}: {what}: {r.get('error')}")
    skipped = data.get("skipped", [])
    if skipped:
        reasons: dict = {}
        for s in skipped:
            reasons.setdefault(s["reason"], []).append(s["what"])
        out += ["", f"## not measured ({len(skipped)} points)"]
        for reason, whats in reasons.items():
            shown = "; ".join(whats[:6]) + (f"; ... ({len(whats) - 6} more)" if len(whats) > 6
                                             else "")
            out.append(f"{reason}: {shown}")
    return "\n".join(out) + "\n"


# ---- gradients.txt -------------------------------------------------------------------------------
def gradients_text(data: dict) -> str:
    meta = data.get("meta", {})
    if meta.get("skipped"):
        return f"# gradients: skipped ({meta['skipped']})\n"
    cfg = meta.get("config", {})
    out = [f"# per-example gradient sketches of a GPT-2 config ({meta.get('n_params', 0):,} "
           f"parameters; {cfg.get('n_layer')} layers, width {cfg.get('n_embd')}), batch "
           f"{cfg.get('batch')} x {cfg.get('seq_len')} tokens, on {meta.get('device', '?')}, "
           f"torch {meta.get('torch', '?')}"]
    if meta.get("not_in_this_version"):
        out.append(f"# layouts not in this version: {', '.join(meta['not_in_this_version'])}")
    base = next((r for r in data.get("rows", []) if "layout" not in r), None)
    if base is not None:
        out.append(f"# {base['what']}: " + (f"{_ms(base['ms'])} ms" if "ms" in base
                                             else base.get("error", "?")))
    body = []
    for r in data.get("rows", []):
        if "layout" not in r:
            continue
        if "ms" not in r:
            body.append([r["layout"], r["algo"], r["mode"], f"2^{r['log_d']}", "-", "-", "-", "-",
                         r.get("error", "")])
            continue
        ov = r.get("overhead")
        body.append([r["layout"], r["algo"], r["mode"], f"2^{r['log_d']}", _ms(r["ms"]),
                     f"{r['examples_per_s']:.1f}", f"{100 * ov:+.0f}%" if ov is not None else "-",
                     f"{r['setup_s']:.1f}", "" if r.get("finite", True) else "NaN/Inf in output"])
    if body:
        out += ["", _table(["layout", "algo", "mode", "D", "ms / batch", "ex/s",
                            "added to gradients", "setup s", "note"], body)]
    for s in data.get("skipped", []):
        out.append(f"not measured: {s['what']}: {s['reason']}")
    return "\n".join(out) + "\n"


def _which(values: dict, ok) -> str:
    """"yes" when every implementation meets a goal, "no" when none does, else which do."""
    if not values:
        return "?"
    good = sorted(i for i, v in values.items() if ok(v))
    if len(good) == len(values):
        return "yes"
    return f"{', '.join(good)} only" if good else "no"


# ---- goals ---------------------------------------------------------------------------------------
def goals(kernels: dict, tests: dict) -> list[tuple[str, str, str, str]]:
    """(goal, paper, here, met) rows."""
    sz = _sizes(kernels)
    main = sz.get("log_n_main")
    lds = sz.get("log_ds") or []
    mid = sz.get("log_d_mid")
    sk = [r for r in _rows(kernels, "sketch") if r["log_n"] == main and r["batch"] == 1]
    floor = copy_floor(kernels).get((main, 1))
    rows = []

    def best(algo):
        """{impl: {log_d: ms}} for ``algo`` at the main size."""
        out: dict = {}
        for r in sk:
            if r["algo"] == algo:
                out.setdefault(r["impl"], {})[r["log_d"]] = r["ms"]
        return out

    for algo in ("affd", "afjl"):
        per = best(algo)
        if not per or floor is None:
            rows.append((f"{algo} at N = 2^{main} within {FLOOR_RATIO:g}x of one copy", "-",
                         "not measured", "?"))
        else:
            ratios = {i: max(t.values()) / floor for i, t in per.items()}
            rows.append((f"{algo} at N = 2^{main} within {FLOOR_RATIO:g}x of one copy "
                         f"({_ms(floor)} ms)", "-",
                         ", ".join(f"{i} {v:.1f}x" for i, v in sorted(ratios.items())),
                         _which(ratios, lambda v: v <= FLOOR_RATIO)))
        flat = {i: t[max(t)] / t[min(t)] for i, t in per.items() if len(t) > 1}
        rows.append((f"{algo} flat in D (t(2^{max(lds) if lds else '?'}) / t(2^"
                     f"{min(lds) if lds else '?'}) <= {FLAT_RATIO:g})",
                     "affd 207-219 ms" if algo == "affd" else "flat",
                     ", ".join(f"{i} {v:.2f}" for i, v in sorted(flat.items())) or "not measured",
                     _which(flat, lambda v: v <= FLAT_RATIO)))
    fj = {r["log_d"]: r["ms"] for r in _rows(kernels, "baseline")
          if r["algo"] == "fast_jl" and r["log_n"] == main and r["batch"] == 1}
    affd = best("affd")
    fastest = min((t[mid] for t in affd.values() if mid in t), default=None)
    if mid in fj and fastest:
        rows.append((f"at D = 2^{mid} at least {SPEEDUP:g}x faster than fast_jl",
                     "5.2x at D = 2^14 (V100)",
                     f"{fj[mid] / fastest:.1f}x (fast_jl {_ms(fj[mid])} ms, "
                     f"affd {_ms(fastest)} ms)",
                     "yes" if fj[mid] / fastest >= SPEEDUP else "no"))
    else:
        state = kernels.get("meta", {}).get("baselines", {}).get("fast_jl", "not measured")
        rows.append((f"at D = 2^{mid} at least {SPEEDUP:g}x faster than fast_jl",
                     "5.2x at D = 2^14 (V100)", f"not measured ({state})", "?"))
    agree = [r["agree"] for r in _rows(kernels, "sketch") if "agree" in r]
    paths = (tests or {}).get("paths", {})
    verdict = ", ".join(f"{k} {v.split(' (')[0]}" for k, v in sorted(paths.items())) or "not run"
    ok = paths and all(v.startswith("passed (") for v in paths.values())
    failed = any(v.startswith("failed") for v in paths.values()) or (agree and max(agree) > AGREE)
    rows.append(("cupy, torch and jax agree with the reference (tests) and each other (kernels)",
                 "-", f"tests: {verdict}; kernels: largest difference "
                 + (f"{max(agree):.1e}" if agree else "not measured"),
                 "no" if failed else ("yes" if ok and agree else "?")))
    return rows


# ---- the section ---------------------------------------------------------------------------------
def load(folder: Path) -> dict:
    def js(name):
        p = folder / name
        return json.loads(p.read_text()) if p.exists() else {}

    tests_txt = folder / "tests.txt"
    return {"env": js("env.json"), "kernels": js("kernels.json"),
            "gradients": js("gradients.json"),
            "tests_txt": tests_txt.read_text() if tests_txt.exists() else ""}


def not_run_section() -> str:
    return "\n".join([
        f"## {TITLE}", "",
        "Prepared, not yet run on a GPU. Until it has run, what is verified for each GPU path: "
        "cupy: its CUDA source compiles and its launches, emulated on the CPU, equal the "
        "reference; it has never run on a GPU. torch on CUDA and jax on GPU: never run on a "
        "GPU. `sketchcore info` says the same on a machine with a CUDA device.", "",
        "The check is one script for a bare GPU machine (docs/gpu.md): it runs the GPU tests of "
        "every path against the numpy reference, times affd, afjl, qk and fjl (and sjlt and srht "
        "where they exist) at N = 2^24..2^27, "
        "D = 2^12..2^18, batch 1 and 32 against one device-to-device copy of the input (the HBM "
        "floor), beside TRAK's fast_jl and fast-hadamard-transform, and times per-example "
        "gradient sketches of the GPT-2 (124M) config, in under 8 minutes:", "",
        "```",
        f"{COMMAND}                       # results under $OUT",
        "python benchmarks/gpu_report.py --from $OUT --save docs/results/gpu "
        "--write docs/results.md",
        "```", "",
        f"Reference: {PAPER}. Goals: affd/afjl at N = 2^27 within {FLOOR_RATIO:g}x of one "
        f"copy; flat in D; at D = 2^16 at least {SPEEDUP:g}x faster than fast_jl; cupy, torch "
        "and jax outputs agree with the reference.", ""])


def section(folder: Path | None) -> str:
    """The markdown section for docs/results.md (the not-yet-run text without a saved run)."""
    if folder is None or not (Path(folder) / "kernels.json").exists():
        return not_run_section()
    run = load(Path(folder))
    env, kernels, grads = run["env"], run["kernels"], run["gradients"]
    tests = env.get("tests", {})
    gpu = env.get("gpu", {})
    device = gpu.get("name") or kernels.get("meta", {}).get("device", "?")
    smoke = " (a --tiny smoke run on the CPU: sizes are tiny, numbers mean nothing)" \
        if env.get("tiny") else ""
    out = [f"## {TITLE}", "",
           f"Measured on {device}" + (f" (driver {gpu['driver']}, {gpu.get('memory', '?')})"
                                      if gpu.get("driver") else "")
           + f" on {env.get('date', '?')}{smoke} with `{COMMAND}` (stages: "
           + ", ".join(f"{k} {v:.0f} s" for k, v in env.get("stage_s", {}).items())
           + f"; total {env.get('total_s', 0):.0f} s). Libraries: "
           + "; ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items()) + ".", ""]
    paths = tests.get("paths", {})
    out.append(f"GPU tests (`pytest -m gpu`): {tests.get('summary') or 'not run'}" + (
        "; " + "; ".join(f"{k}: {v}" for k, v in sorted(paths.items())) if paths else "") + ".")
    out += ["", f"Reference: {PAPER}.", "", "| goal | paper | here | met? |", "|---|---|---|---|"]
    out += [f"| {g} | {p} | {h} | {m} |" for g, p, h, m in goals(kernels, tests)]
    out += ["", "```", kernels_text(kernels).rstrip(), "```", ""]
    if grads:
        out += ["```", gradients_text(grads).rstrip(), "```", ""]
    return "\n".join(out)


def replace_section(text: str, new: str) -> str:
    """``text`` with its GPU section (from its heading to the next ``## `` heading) replaced by
    ``new``, or with ``new`` appended."""
    m = HEADING.search(text)
    if m is None:
        return text.rstrip("\n") + "\n\n" + new.rstrip("\n") + "\n"
    tail, fenced, pos = "", False, m.end() + 1
    for line in text[pos:].splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("## ") and not fenced:  # the next section (not a table's title)
            tail = text[pos:]
            break
        pos += len(line)
    return text[:m.start()] + new.rstrip("\n") + "\n" + ("\n" + tail if tail else "")


def scrub(text: str) -> str:
    """``text`` without the folders of the machine it ran on: an absolute path keeps only its
    last part (compiler messages name headers by their full path)."""
    return re.sub(r"(?<![\w.])(?:/[\w.+-]+)+/([\w.+-]+)", r".../\1", text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="src", type=Path, default=None,
                    help="gpu_check's output folder (omit: the not-yet-run section)")
    ap.add_argument("--save", type=Path, default=None,
                    help="copy the run's data here (docs/results/gpu for run_all.py)")
    ap.add_argument("--write", type=Path, default=None,
                    help="replace (or append) the section in this markdown file")
    args = ap.parse_args(argv)
    folder = args.src
    if args.save is not None and folder is not None:
        args.save.mkdir(parents=True, exist_ok=True)
        for name in SAVED:
            if (folder / name).exists():
                (args.save / name).write_text(scrub((folder / name).read_text()))
        folder = args.save
    text = section(folder)
    if args.write is not None:
        old = args.write.read_text() if args.write.exists() else ""
        args.write.write_text(replace_section(old, text))
        print(f"wrote the GPU section of {args.write}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
