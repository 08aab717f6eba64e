"""The GPU check without a GPU: the record that ``sketchcore info`` reads (both branches, with a
fake device folder and a temporary cache folder), the script's smoke mode (``--tiny``: its stages
on the CPU with tiny sizes, into a temporary folder) and the report generator on that output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_report  # noqa: E402

from sketchcore import __version__, gpu_status  # noqa: E402


# ---- the record and `sketchcore info` ------------------------------------------------------------
@pytest.fixture
def fake_gpu(tmp_path, monkeypatch):
    """A device folder with one NVIDIA GPU and an empty cache folder."""
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "nvidia0").touch()
    (root / "dev" / "nvidiactl").touch()
    gpu = root / "proc" / "driver" / "nvidia" / "gpus" / "0000:01:00.0"
    gpu.mkdir(parents=True)
    (gpu / "information").write_text("Model: \t\t NVIDIA H200\nIRQ:   42\n")
    monkeypatch.setenv("SKETCHCORE_DEVICE_ROOT", str(root))
    monkeypatch.setenv("SKETCHCORE_CACHE_DIR", str(tmp_path / "cache"))
    return root


def test_no_cuda_device_no_gpu_lines(tmp_path, monkeypatch):
    (tmp_path / "empty" / "dev").mkdir(parents=True)
    (tmp_path / "empty" / "dev" / "null").touch()
    monkeypatch.setenv("SKETCHCORE_DEVICE_ROOT", str(tmp_path / "empty"))
    monkeypatch.setenv("SKETCHCORE_CACHE_DIR", str(tmp_path / "cache"))
    assert gpu_status.find_cuda() is None
    assert gpu_status.info_lines(__version__) == []


def test_cuda_without_a_passing_record_says_what_is_unverified(fake_gpu):
    dev = gpu_status.find_cuda()
    assert dev is not None and dev.name == "NVIDIA H200" and dev.how == "/dev/nvidia0"
    text = "\n".join(gpu_status.info_lines(__version__))
    assert "NVIDIA H200" in text and "has not passed" in text
    assert "launches emulated on the CPU; never run on a GPU" in text
    assert text.count("never run on a GPU") == 3 and "gpu_check.sh" in text


def test_a_passing_record_for_this_version_is_shown(fake_gpu):
    path = gpu_status.write_record(
        version=__version__, device="NVIDIA H200", tests="60 passed, 2 skipped",
        paths={"cupy": "passed", "torch-cuda": "passed", "jax-gpu": "failed (1 of 20 tests)"})
    assert path == Path(os.environ["SKETCHCORE_CACHE_DIR"]) / "gpu-check.json"
    text = "\n".join(gpu_status.info_lines(__version__))
    assert "GPU check of sketchcore" in text and "60 passed, 2 skipped" in text
    assert "cupy        passed" in text and "torch-cuda  passed" in text
    assert "jax-gpu     failed (1 of 20 tests); never run on a GPU" in text
    # another version's record, a record where nothing passed, a damaged file: the caveat again
    assert "has not passed" in "\n".join(gpu_status.info_lines(__version__ + ".dev1"))
    gpu_status.write_record(version=__version__, device="x", paths={"cupy": "failed (2 of 3)"})
    assert "has not passed" in "\n".join(gpu_status.info_lines(__version__))
    path.write_text("{not json")
    assert gpu_status.read_record() is None


def test_record_goes_to_the_xdg_cache_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("SKETCHCORE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert gpu_status.record_path() == tmp_path / "sketchcore" / "gpu-check.json"


def _info(capsys) -> str:
    from sketchcore.cli import main

    capsys.readouterr()
    assert main(["info"]) == 0
    return capsys.readouterr().out


def test_sketchcore_info_prints_both_branches(fake_gpu, tmp_path, monkeypatch, capsys):
    out = _info(capsys)
    assert "gpu: CUDA device found (NVIDIA H200)" in out and "has not passed" in out
    gpu_status.write_record(version=__version__, device="NVIDIA H200",
                            paths={p: "passed" for p in gpu_status.PATHS})
    out = _info(capsys)
    assert "GPU check of sketchcore" in out and "has not passed" not in out
    (tmp_path / "bare" / "dev").mkdir(parents=True)
    monkeypatch.setenv("SKETCHCORE_DEVICE_ROOT", str(tmp_path / "bare"))
    assert "gpu:" not in _info(capsys)


def test_the_gpu_lines_import_no_array_library(fake_gpu):
    code = ("import sys\nfrom sketchcore import gpu_status\n"
            "assert gpu_status.info_lines('0') and gpu_status.find_cuda() is not None\n"
            "assert not {'torch', 'jax', 'cupy'} & set(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=dict(os.environ))


def test_gpu_check_records_only_what_passed(fake_gpu):
    log = gpu_check.Log(Path(os.environ["SKETCHCORE_CACHE_DIR"]).parent / "log.txt", 0.0)
    tests = {"summary": "3 passed, 1 failed",
             "paths": {"cupy": "passed (2 tests)", "torch-cuda": "failed (1 of 2 tests)",
                       "jax-gpu": "passed partially (3 tests) before the time budget ran out"}}
    gpu_check.record_outcome(tests, {"gpu": {"name": "NVIDIA H200"}}, log, tiny=False)
    rec = gpu_status.read_record()
    assert rec["paths"] == {"cupy": "passed", "torch-cuda": "failed (1 of 2 tests)",
                            "jax-gpu": "passed partially (3 tests) before the time budget "
                                       "ran out"}
    assert rec["version"] == __version__ and rec["device"] == "NVIDIA H200"
    gpu_status.record_path().unlink()
    gpu_check.record_outcome(tests, {}, log, tiny=True)  # a smoke run never records
    assert gpu_status.read_record() is None


def test_junit_results_are_sorted_by_path(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text("""<?xml version="1.0"?><testsuites><testsuite>
<testcase classname="tests.backends.test_cupy" name="test_gpu_kernels_equal_the_reference[float32]"/>
<testcase classname="tests.backends.test_cupy" name="test_gpu_backend_conforms"/>
<testcase classname="tests.backends.test_gpu_paths" name="test_outputs[torch-cuda-affd-hadamard-float32]">
  <failure message="boom"/></testcase>
<testcase classname="tests.backends.test_gpu_paths" name="test_outputs[torch-cuda-qk-float32]"/>
<testcase classname="tests.backends.test_gpu_paths" name="test_torch_cuda_never_synchronizes[qk]"/>
<testcase classname="tests.backends.test_gpu_paths" name="test_outputs[jax-gpu-qk-float32]">
  <skipped message="jax-gpu: no GPU device"/></testcase>
<testcase classname="tests.backends.test_gpu_paths" name="test_outputs[cupy-qk-float32]"/>
</testsuite></testsuites>""")
    assert gpu_check.classify_junit(xml) == {
        "cupy": "passed (3 tests)", "torch-cuda": "failed (1 of 3 tests)",
        "jax-gpu": "skipped: jax-gpu: no GPU device"}
    # a run stopped by the budget leaves no junit file: pytest's -v lines tell what finished
    lines = ("tests/backends/test_cupy.py::test_gpu_backend_conforms PASSED      [  1%]\n"
             "tests/backends/test_gpu_paths.py::test_outputs[torch-cuda-qk-float32] FAILED [ 2%]\n"
             "tests/backends/test_gpu_paths.py::test_outputs[jax-gpu-qk-float32] PASSED [  3%]\n")
    assert gpu_check.classify_lines(lines) == {
        "cupy": "passed (1 tests)", "torch-cuda": "failed (1 of 1 tests)",
        "jax-gpu": "passed (1 tests)"}


# ---- the smoke run and the report ---------------------------------------------------------------
def _smoke(out: Path, stages: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny",
                           "--out", str(out), "--stages", stages, "--budget-s", "240"],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _check_report(out: Path, tmp_path: Path) -> str:
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(p.is_file() for p in out.iterdir()), files
    assert set(files) <= set(gpu_check.OUT_FILES), files
    text = gpu_report.section(out)
    assert text.startswith(f"## {gpu_report.TITLE}") and "smoke run" in text
    assert "| goal | paper | here | met? |" in text and "fast_jl" in text
    # --save keeps the data without machine folders; --write replaces the section in place
    page = tmp_path / "results.md"
    page.write_text("# Results\n\n## 5. Memory\n\ntext\n")
    saved = tmp_path / "saved"
    assert gpu_report.main(["--from", str(out), "--save", str(saved), "--write", str(page)]) == 0
    first = page.read_text()
    assert first.startswith("# Results\n\n## 5. Memory\n\ntext\n\n## 7. GPU")
    assert str(ROOT) not in "".join(p.read_text() for p in saved.iterdir())
    page.write_text(first + "\n## 7. Later\n\nmore\n")
    gpu_report.main(["--from", str(saved), "--write", str(page)])
    assert page.read_text() == first + "\n## 7. Later\n\nmore\n"
    return text


def test_smoke_run_of_the_kernel_stage_and_its_report(tmp_path):
    out = tmp_path / "out"
    proc = _smoke(out, "kernels")
    assert "== kernels:" in proc.stdout and "done in" in proc.stdout
    kernels = json.loads((out / "kernels.json").read_text())
    rows = [r for r in kernels["rows"] if r.get("kind") == "sketch" and "ms" in r]
    assert {r["algo"] for r in rows} >= set(gpu_check.ALGOS)
    assert all(r["ms"] > 0 for r in rows)
    if len(kernels["meta"]["implementations"]) > 1:  # torch and jax saw the same input
        assert any("agree" in r for r in rows)
        assert max(r["agree"] for r in rows if "agree" in r) < 1e-4
    assert any(r.get("kind") == "copy" for r in kernels["rows"])
    assert kernels["meta"]["baselines"]["fast_jl"].startswith("skipped")
    text = _check_report(out, tmp_path)
    assert "## sketches at N = 2^12, batch 1" in text and "not run" in text  # no GPU tests
    assert "| ? |" in text  # fast_jl and the GPU tests: not measured here, neither met nor missed


@pytest.mark.slow
def test_smoke_run_of_every_stage(tmp_path):
    out = tmp_path / "out"
    proc = _smoke(out, ",".join(gpu_check.STAGES))
    for stage in gpu_check.STAGES:
        assert f"== {stage}:" in proc.stdout
    env = json.loads((out / "env.json").read_text())
    assert all(v.startswith("skipped") for v in env["tests"]["paths"].values()), env["tests"]
    assert "skipped" in (out / "tests.txt").read_text()
    grads = json.loads((out / "gradients.json").read_text())
    assert [r for r in grads["rows"] if "layout" in r and "ms" in r]
    assert "ms / batch" in (out / "gradients.txt").read_text()
    _check_report(out, tmp_path)


def test_results_md_has_the_generated_gpu_section():
    saved = ROOT / "docs" / "results" / "gpu"
    want = gpu_report.section(saved if (saved / "kernels.json").exists() else None)
    assert want.strip() in (ROOT / "docs" / "results.md").read_text(), (
        "docs/results.md's GPU section is stale: python benchmarks/gpu_report.py "
        "[--from docs/results/gpu] --write docs/results.md")


def test_goals_and_tables_of_a_gpu_like_run():
    """The report's goal rows and tables on made-up GPU-sized numbers (what a run with every
    baseline built looks like), including the rows the CPU smoke run cannot produce."""
    rows = [{"kind": "copy", "impl": "cupy", "log_n": 27, "batch": 1, "ms": 0.25}]
    for impl, scale in (("cupy", 1.0), ("torch", 1.5), ("jax", 2.0)):
        for ld in (12, 16, 18):
            rows.append({"kind": "sketch", "algo": "affd", "impl": impl, "log_n": 27,
                         "log_d": ld, "batch": 1, "ms": 0.6 * scale, "agree": 3e-7})
            rows.append({"kind": "sketch", "algo": "afjl", "impl": impl, "log_n": 27,
                         "log_d": ld, "batch": 1, "ms": 0.5 * scale * (1 + (ld == 18))})
    rows += [{"kind": "baseline", "algo": "fast_jl", "impl": "torch", "log_n": 27, "log_d": ld,
              "batch": 1, "ms": ms} for ld, ms in ((12, 90.0), (14, 360.0), (16, 1400.0))]
    rows.append({"kind": "fwht", "impl": "torch", "log_n": 27, "batch": 1, "row_log": 15,
                 "ms": 0.7, "fast_hadamard_transform": {"ms": 0.5, "agree": 1e-7}})
    kernels = {"meta": {"device": "NVIDIA H200", "sizes": gpu_check.FULL,
                        "implementations": {"cupy": "CUDA events", "torch": "CUDA events",
                                            "jax": "wall clock"},
                        "baselines": {"fast_jl": "built in 80 s"}},
               "rows": rows, "skipped": [{"key": "k", "what": "fast_jl D=2^18",
                                          "reason": "one call would take about 6 s"}]}
    tests = {"paths": {"cupy": "passed (40 tests)", "torch-cuda": "passed (50 tests)",
                       "jax-gpu": "passed (45 tests)"}}
    got = {g[0].split(" (")[0]: (g[2], g[3]) for g in gpu_report.goals(kernels, tests)}
    assert got["affd at N = 2^27 within 3x of one copy"] == (
        "cupy 2.4x, jax 4.8x, torch 3.6x", "cupy only")
    assert got["affd flat in D"][1] == "yes" and got["afjl flat in D"][1] == "no"
    speed = got["at D = 2^16 at least 10x faster than fast_jl"]
    assert speed[0].startswith("2333.3x") and speed[1] == "yes"
    assert got["cupy, torch and jax agree with the reference"][1] == "yes"
    text = gpu_report.kernels_text(kernels)
    for part in ("## copy floor", "## sketches at N = 2^27, batch 1", "fast_jl (TRAK CUDA",
                 "fast-hadamard-transform ms", "one call would take about 6 s: fast_jl D=2^18"):
        assert part in text, part
    tests["paths"]["jax-gpu"] = "failed (2 of 45 tests)"
    assert gpu_report.goals(kernels, tests)[-1][3] == "no"


def test_kernel_points_put_the_goals_first_and_baselines_stop_growing():
    pts = gpu_check.kernel_points(gpu_check.FULL)
    keys = [p["key"] for p in pts]
    assert len(keys) == len(set(keys))
    first = [(p["kind"], p.get("algo"), p.get("log_d")) for p in pts if p["kind"] != "copy"][:9]
    assert first[:6] == [("sketch", a, d) for d in (12, 16, 18) for a in ("affd", "afjl")]
    assert first[6:] == [("baseline", "fast_jl", d) for d in (12, 14, 16)]
    fj = {"kind": "baseline", "algo": "fast_jl", "log_n": 27, "batch": 1}
    done = [{**fj, "log_d": 14, "ms": 1500.0}]
    assert gpu_check._too_slow({**fj, "log_d": 16}, done, 8.0) is None
    assert "about 24.0 s" in gpu_check._too_slow({**fj, "log_d": 18}, done, 8.0)
