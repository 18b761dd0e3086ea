"""gluon_cifar.data.loaders: the chapter's loaders."""
from gluon_cifar.data.loaders import load_datasets, make_loaders
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.transforms import chapter_train_transform

from conftest import SIZES


def test_loaders_follow_the_chapter(kaggle_dir):
    datasets = load_datasets(reorg_cifar10_data(kaggle_dir, 0.3))
    assert datasets["train"].synsets == sorted(SIZES)
    loaders = make_loaders(datasets, 4, chapter_train_transform())
    X, y = next(iter(loaders["train"]))
    assert X.shape == (4, 3, 32, 32) and y.shape == (4,)
    assert len(loaders["train"]) == (30 - 6) // 4          # discard the last partial batch
    assert len(loaders["valid"]) == 6 // 4
    assert set(loaders) == {"train", "valid", "train_valid"}  # test images are predicted from their folder
