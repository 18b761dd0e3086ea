"""The chapter notebook runs top to bottom in a fresh kernel, with a data folder given and with none."""
import os

import nbformat
import pandas as pd
import pytest
from ipykernel.kernelspec import install
from nbclient import NotebookClient

from conftest import CLASSES, REPO

NOTEBOOK = os.path.join(REPO, "notebooks", "kaggle_cifar10.ipynb")


KERNEL = "gluon-cifar-test"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.parametrize("data", ["given", "none"])
def test_notebook_test_mode_runs_to_the_end_and_writes_the_submission(data, tiny_copy, tmp_path, monkeypatch):
    """With GLUON_CIFAR_DATA_DIR given as a path relative to the shell's folder (the kernel runs elsewhere),
    and with none: offline, the download fails and the notebook trains on the bundled sample."""
    # A kernelspec for this interpreter (the venv's), found first through JUPYTER_PATH, so the
    # kernel never resolves to another Python installed on the machine.
    install(kernel_name=KERNEL, prefix=str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    if data == "given":
        monkeypatch.setenv("PWD", str(tmp_path))  # the shell's folder, where the variable was set
        monkeypatch.setenv("GLUON_CIFAR_DATA_DIR", os.path.relpath(tiny_copy, tmp_path))
    else:
        monkeypatch.delenv("GLUON_CIFAR_DATA_DIR", raising=False)
        (tmp_path / "home").mkdir()
        monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the demo cache: ~/.cache/gluon_cifar
        monkeypatch.setenv("GLUON_CIFAR_DEMO_URL", "http://127.0.0.1:9/kaggle_cifar10_tiny.zip")  # refused: offline
    monkeypatch.setenv("GLUON_CIFAR_NOTEBOOK_SMOKE", "1")  # a run of seconds
    # The kernel shares the cores with the rest of the suite: one OpenMP thread, so it never
    # spin-waits for a core another process holds.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # execute() raises CellExecutionError on the first failing cell (the export check asserts too).
    NotebookClient(nb, kernel_name=KERNEL, timeout=600,
                   resources={"metadata": {"path": str(run_dir)}}).execute()

    submission = pd.read_csv(run_dir / "submission.csv")
    assert list(submission.columns) == ["id", "label"]
    assert submission["id"].tolist() == [1, 2, 3, 4, 5]
    assert set(submission["label"]) <= set(CLASSES)
    for name in ("model-symbol.json", "model-0000.params", "model-classes.json"):
        assert (run_dir / "kaggle_cifar10_work" / name).is_file(), name
    assert not os.path.exists(os.path.join(tiny_copy, "train_valid_test"))  # the source is only read
