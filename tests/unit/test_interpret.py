"""What a model gets wrong (gluon_cifar.deploy.interpret, `python -m gluon_cifar.interpret`): the per-class
figures against a case counted by hand, the labels of a folder holding only some classes, the same predictions
as the submission path, and the command's refusals."""
import csv
import os

import mxnet as mx
import numpy as onp
import pytest
from PIL import Image

from gluon_cifar import interpret as interpret_command
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.deploy.export import load_exported
from gluon_cifar.deploy.interpret import Interpretation, confusion_matrix, interpret, per_class, write_interpretation
from gluon_cifar.deploy.predict import Inference, predict_folder

from clitools import snapshot
from conftest import CLASSES, TINY, refused, tiny_images


def test_per_class_figures_of_a_case_counted_by_hand():
    # true 0 0 0 1 1 2, predicted 0 1 0 1 1 1: class 2 is never predicted
    counts = confusion_matrix(onp.array([0, 0, 0, 1, 1, 2]), onp.array([0, 1, 0, 1, 1, 1]), 3)
    assert counts.tolist() == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    rows = per_class(counts)
    assert [(r["images"], r["predicted"], r["correct"]) for r in rows] == [(3, 2, 2), (2, 4, 2), (1, 0, 0)]
    assert [r["precision"] for r in rows] == [1.0, 0.5, None]
    assert rows[0]["recall"] == pytest.approx(2 / 3) and rows[1]["recall"] == 1.0 and rows[2]["recall"] == 0.0
    # right about "is it class k?": class 0 misses one of its own; class 1 takes 2 others; class 2 misses its one
    assert [r["accuracy"] for r in rows] == pytest.approx([5 / 6, 4 / 6, 5 / 6])


def test_losses_are_the_cross_entropy_of_the_true_class_and_the_files_hold_the_figures(tmp_path):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(onp.full((32, 32, 3), 40 * i, onp.uint8)).save(paths[-1])
    probs = onp.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.25, 0.25]])
    result = Interpretation(["a", "b", "c"], onp.array([0, 1, 2]), probs, paths)
    assert result.losses == pytest.approx(-onp.log([0.7, 0.8, 0.25]))
    out = tmp_path / "out"
    out.mkdir()
    assert write_interpretation(result, str(out)) == ["confusion.png", "per_class.csv", "top_losses.png"]
    with open(out / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["class"], r["images"], r["predicted"], r["correct"], r["precision"], r["recall"]) for r in rows] == [
        ("a", "1", "2", "1", "0.5000", "1.0000"), ("b", "1", "1", "1", "1.0000", "1.0000"),
        ("c", "1", "0", "0", "", "0.0000")]
    for name in ("confusion.png", "top_losses.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 300


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory):
    """Tiny's images 801-880 as class folders of only the classes they hold (not all ten)."""
    labels = read_csv_labels(os.path.join(TINY, "trainLabels.csv")) if os.path.isdir(TINY) else {}
    root = tmp_path_factory.mktemp("labelled") / "valid"
    for path in tiny_images(801, 80):
        label = labels[os.path.splitext(os.path.basename(path))[0]]
        os.makedirs(root / label, exist_ok=True)
        os.symlink(path, root / label / os.path.basename(path))
    return root


def test_interpret_maps_the_folders_classes_to_the_models_and_predicts_as_the_submission_does(
        reference_prefix, class_folders, tmp_path):
    net, classes = load_exported(reference_prefix, mx.cpu())
    result = interpret(net, str(class_folders), classes, Inference(32, mx.cpu()))
    by_name = {os.path.basename(p): (classes[label], classes[pred])
               for p, label, pred in zip(result.paths, result.labels, result.preds)}
    labels = read_csv_labels(os.path.join(TINY, "trainLabels.csv"))
    assert {name: true for name, (true, _) in by_name.items()} == {
        f"{i}.png": labels[str(i)] for i in range(801, 881)}
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in tiny_images(801, 80):
        os.symlink(path, flat / os.path.basename(path))
    predict_folder(net, str(flat), classes, str(tmp_path / "s.csv"), Inference(32, mx.cpu()))
    with open(tmp_path / "s.csv") as f:
        submitted = {f"{row['id']}.png": row["label"] for row in csv.DictReader(f)}
    assert {name: pred for name, (_, pred) in by_name.items()} == submitted
    assert (result.preds == result.labels).mean() > 0.8  # the reference model is about 91% right


def test_the_command_writes_the_three_files_beside_the_model(reference_prefix, class_folders, tmp_path, capsys):
    out = tmp_path / "report"
    interpret_command.main(["--model", reference_prefix, "--data-dir", str(class_folders), "--output-dir", str(out)])
    assert "80 images, accuracy" in capsys.readouterr().out
    with open(out / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(int(r["images"]) for r in rows) == 80 and [r["class"] for r in rows] == list(CLASSES)
    assert {"confusion.png", "top_losses.png"} <= set(os.listdir(out))


def test_the_command_refuses_a_class_the_model_does_not_know_and_keeps_the_users_files(
        reference_prefix, class_folders, tmp_path, capsys):
    folders = tmp_path / "valid"
    (folders / "unicorn").mkdir(parents=True)
    os.symlink(next(iter(tiny_images(1, 1))), folders / "unicorn" / "1.png")
    refused(interpret_command.main, ["--model", reference_prefix, "--data-dir", folders, "--output-dir", tmp_path / "o"],
            capsys, "'unicorn' is not a class of the model")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "confusion.png").write_text("my own figure")
    before = snapshot(mine)
    refused(interpret_command.main, ["--model", reference_prefix, "--data-dir", class_folders, "--output-dir", mine],
            capsys, "confusion.png")
    assert snapshot(mine) == before
    refused(interpret_command.main, ["--model", reference_prefix, "--data-dir", class_folders,
                                     "--output-dir", class_folders / "airplane"], capsys, "inside the input folder")
