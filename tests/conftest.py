"""Shared fixtures: small Kaggle-layout datasets written as real PNG files in a temporary folder."""
import os
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # MXNet 1.9.1 imports distutils' LooseVersion
    import gluon_cifar  # noqa: F401
    from mxnet import npx

npx.set_np()  # as the chapter, the commands and the notebook do

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
TINY = os.path.join(SHARED, "data", "cifar10_tiny")
REFERENCE_PARAMS = os.path.join(SHARED, "models", "resnet18_reference.params")


def write_png(path, rng, size=32, mode="RGB"):
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def make_kaggle_dir(root, per_class, num_test=7, classes=CLASSES[:3], seed=0):
    """A Kaggle-layout folder: train/<id>.png with trainLabels.csv, test/<id>.png, ids shuffled."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "train"))
    os.makedirs(os.path.join(root, "test"))
    labels = [c for c in classes for _ in range(per_class[c] if isinstance(per_class, dict) else per_class)]
    order = rng.permutation(len(labels))
    rows = ["id,label"]
    for image_id, index in enumerate(order, start=1):
        write_png(os.path.join(root, "train", f"{image_id}.png"), rng)
        rows.append(f"{image_id},{labels[index]}")
    with open(os.path.join(root, "trainLabels.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    for image_id in range(1, num_test + 1):
        write_png(os.path.join(root, "test", f"{image_id}.png"), rng)
    return str(root)


@pytest.fixture
def kaggle_dir(tmp_path):
    """Three classes of 10, 12 and 8 images, and 7 test images."""
    return make_kaggle_dir(tmp_path / "kaggle", {"airplane": 10, "automobile": 12, "bird": 8})


@pytest.fixture
def tiny_copy(tmp_path):
    """A writable copy of ../shared/data/cifar10_tiny (skips where shared/ is absent; CI has it)."""
    if not os.path.isdir(TINY):
        pytest.skip("../shared/data/cifar10_tiny is not present")
    dst = tmp_path / "cifar10_tiny"
    shutil.copytree(TINY, dst)
    for folder, _, files in os.walk(dst):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return str(dst)


def pytest_configure(config):
    # MXNet 1.9.1's own split_and_load and version checks use deprecated calls; not ours.
    config.addinivalue_line("filterwarnings", "ignore:ndarray.as_in_context has been renamed:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:distutils Version classes are deprecated:DeprecationWarning")
