"""`benchmarks/run.py --quick` runs the whole benchmark end to end on the demo set and reports every row; a
baseline checkout's code runs that checkout's package, wherever the benchmark is started from; the weak-scaling
benchmark runs a 2-worker job and measures what its workers exchange."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REFERENCE_PARAMS, REPO, TINY

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from checkouts import run_python  # noqa: E402

STAGES = ("reorg, first run", "reorg, re-run", "input pipeline", "vs MXNet as the chapter runs it",
          "vs the chapter on every core", "vs PyTorch eager", "fused FP32", "INT8 (", "INT8 vs PyTorch",
          "300,000-image prediction", "INT8 agreement", "INT8 accuracy change")


def test_quick_benchmark_prints_and_saves_every_row(tmp_path):
    if not (os.path.isdir(TINY) and os.path.isfile(REFERENCE_PARAMS)):
        pytest.skip("../shared (demo set and reference model) is not present")
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "run.py"), "--quick",
                             "--work-dir", str(tmp_path / "work"), "--output", str(out),
                             "--torch-python", str(tmp_path / "no-torch" / "python")],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")][2:]
    assert len(table) == len(STAGES)
    for line, stage in zip(table, STAGES):
        assert stage in line, line
    assert "PyTorch eager: missing (no benchmark environment with torch" in result.stdout
    assert "machine: cpu " in result.stdout and "mxnet 1.9.1" in result.stdout

    report = json.loads(out.read_text())
    assert report["mode"] == "quick" and len(report["rows"]) == len(STAGES)
    timed = [r for r in report["rows"] if "ours" in r]
    for r in timed:
        assert r["ours"]["median"] > 0 and r["ours"]["min"] <= r["ours"]["median"] <= r["ours"]["max"]
    assert all(r["ratio"] > 0 for r in timed if "median" in r["baseline"])


def test_weak_scaling_runs_a_job_and_measures_a_push_and_a_pull_of_every_gradient(tmp_path):
    if not os.path.isdir(TINY):
        pytest.skip("../shared/data/cifar10_tiny is not present")
    rows_file = tmp_path / "rows.json"
    result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "scaling.py"), "--data-dir", TINY,
                             "--cores-per-worker", "1", "--workers", "2", "--batch-size", "4", "--warmup", "1",
                             "--steps", "2", "--breakdown", "1", "--json", str(rows_file)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "done: 2 worker(s) x 1 cores" in result.stdout
    (row,) = json.loads(rows_file.read_text())["rows"]
    assert row["workers"] == 2 and row["img_s"] > 0
    assert all(row["phases"][phase] > 0 for phase in ("compute", "push_pull", "update"))
    # each step every worker pushes its gradients and pulls the sum: 4 bytes a parameter each way
    assert 0.95 < row["bytes_per_step_per_worker"] / (8 * row["parameters"]) < 1.1
    assert row["parameters"] > 11_000_000  # the chapter's ResNet-18


def fake_checkout(root, name):
    """A folder holding a `gluon_cifar` package that says which checkout it is."""
    (root / name / "gluon_cifar").mkdir(parents=True)
    (root / name / "gluon_cifar" / "__init__.py").write_text(f"CHECKOUT = {name!r}\n")
    return root / name


def test_a_baseline_runs_its_own_package_even_from_inside_another_checkout(tmp_path, monkeypatch):
    old, new = fake_checkout(tmp_path, "old"), fake_checkout(tmp_path, "new")
    monkeypatch.chdir(new)  # `python -c` started here would import new/gluon_cifar first
    assert run_python(old, "print(gluon_cifar.CHECKOUT)", []).strip() == "old"
    assert run_python(new, "import sys; print(gluon_cifar.CHECKOUT, sys.argv[1])", ["x"]).split() == ["new", "x"]


def test_a_checkout_without_the_package_is_refused_not_replaced_by_another(tmp_path, monkeypatch):
    monkeypatch.chdir(fake_checkout(tmp_path, "new"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=f"the run in {tmp_path / 'empty'} failed"):
        run_python(tmp_path / "empty", "print('ran')", [])
