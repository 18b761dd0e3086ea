"""The chapter's reorganisation rules, made deterministic and idempotent, and its loaders."""
import hashlib
import os


from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.data.loaders import load_datasets, make_loaders
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.transforms import chapter_train_transform

SIZES = {"airplane": 10, "automobile": 12, "bird": 8}


def tree_snapshot(root):
    """{relative path: sha1} of every file under root, to prove sources stay untouched."""
    snap = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                snap[os.path.relpath(path, root)] = hashlib.sha1(f.read()).hexdigest()
    return snap


def class_files(reorg_dir, split):
    split_dir = os.path.join(reorg_dir, split)
    return {c: sorted(os.listdir(os.path.join(split_dir, c))) for c in sorted(os.listdir(split_dir))}


def test_split_counts_follow_the_rarest_class(kaggle_dir):
    reorg = reorg_cifar10_data(kaggle_dir, valid_ratio=0.3)
    # rarest class has 8 images: max(1, floor(8 * 0.3)) = 2 validation images per class
    valid, train, train_valid = (class_files(reorg, s) for s in ("valid", "train", "train_valid"))
    assert {c: len(v) for c, v in valid.items()} == {c: 2 for c in SIZES}
    assert {c: len(v) for c, v in train.items()} == {c: n - 2 for c, n in SIZES.items()}
    assert {c: len(v) for c, v in train_valid.items()} == SIZES
    for c in SIZES:
        assert set(valid[c]) | set(train[c]) == set(train_valid[c])
        assert not set(valid[c]) & set(train[c])
    assert sorted(os.listdir(os.path.join(reorg, "test", "unknown"))) == sorted(f"{i}.png" for i in range(1, 8))


def test_labels_match_csv_and_valid_takes_lowest_ids(kaggle_dir):
    """Numeric id order, not directory listing order, decides which images are held out."""
    labels = read_csv_labels(os.path.join(kaggle_dir, "trainLabels.csv"))
    reorg = reorg_cifar10_data(kaggle_dir, valid_ratio=0.3)
    for split in ("train", "valid"):
        for c, files in class_files(reorg, split).items():
            assert all(labels[f[:-4]] == c for f in files)
    for c, files in class_files(reorg, "valid").items():
        ids_of_class = sorted(int(i) for i, label in labels.items() if label == c)
        assert sorted(int(f[:-4]) for f in files) == ids_of_class[:2]


def test_at_least_one_validation_image_per_class(kaggle_dir):
    reorg = reorg_cifar10_data(kaggle_dir, valid_ratio=0.01)
    assert all(len(v) == 1 for v in class_files(reorg, "valid").values())


def test_reorg_is_idempotent_and_leaves_sources_untouched(kaggle_dir):
    before = tree_snapshot(kaggle_dir)
    reorg = reorg_cifar10_data(kaggle_dir, 0.3)
    first = tree_snapshot(reorg)
    marker_mtime = os.stat(os.path.join(reorg, ".complete.json")).st_mtime_ns
    assert reorg_cifar10_data(kaggle_dir, 0.3) == reorg
    assert tree_snapshot(reorg) == first
    assert os.stat(os.path.join(reorg, ".complete.json")).st_mtime_ns == marker_mtime  # not redone
    after = {k: v for k, v in tree_snapshot(kaggle_dir).items() if not k.lstrip(".").startswith("train_valid_test")}
    assert after == before


def test_files_are_hard_links_of_the_sources(kaggle_dir):
    reorg = reorg_cifar10_data(kaggle_dir, 0.3)
    some = os.path.join(reorg, "train_valid", "bird", os.listdir(os.path.join(reorg, "train_valid", "bird"))[0])
    assert os.path.samefile(some, os.path.join(kaggle_dir, "train", os.path.basename(some)))


def test_a_new_ratio_replaces_the_old_split(kaggle_dir):
    reorg_cifar10_data(kaggle_dir, 0.3)
    reorg = reorg_cifar10_data(kaggle_dir, 0.5)
    assert all(len(v) == 4 for v in class_files(reorg, "valid").values())
    assert {c: len(v) for c, v in class_files(reorg, "train").items()} == {c: n - 4 for c, n in SIZES.items()}


def test_reorg_into_a_separate_folder(kaggle_dir, tmp_path):
    reorg = reorg_cifar10_data(kaggle_dir, 0.3, reorg_dir=str(tmp_path / "elsewhere"))
    assert reorg == str(tmp_path / "elsewhere")
    assert not os.path.exists(os.path.join(kaggle_dir, "train_valid_test"))


def test_loaders_follow_the_chapter(kaggle_dir):
    datasets = load_datasets(reorg_cifar10_data(kaggle_dir, 0.3))
    assert datasets["train"].synsets == sorted(SIZES)
    loaders = make_loaders(datasets, 4, chapter_train_transform())
    X, y = next(iter(loaders["train"]))
    assert X.shape == (4, 3, 32, 32) and y.shape == (4,)
    assert len(loaders["train"]) == (30 - 6) // 4          # discard the last partial batch
    assert len(loaders["valid"]) == 6 // 4
    assert set(loaders) == {"train", "valid", "train_valid"}  # test images are predicted from their folder


def test_competition_archives_are_unpacked_when_folders_are_missing(kaggle_dir, tmp_path):
    import py7zr
    download = tmp_path / "download"
    download.mkdir()
    for split in ("train", "test"):
        with py7zr.SevenZipFile(download / f"{split}.7z", "w") as z:
            z.writeall(os.path.join(kaggle_dir, split), split)
    os.link(os.path.join(kaggle_dir, "trainLabels.csv"), download / "trainLabels.csv")
    reorg = reorg_cifar10_data(str(download), 0.3)
    assert tree_snapshot(download / "train") == tree_snapshot(os.path.join(kaggle_dir, "train"))
    assert {c: len(v) for c, v in class_files(reorg, "train_valid").items()} == SIZES
    assert set(os.listdir(download)) == {"test", "test.7z", "train", "train.7z", "train_valid_test",
                                         ".train_valid_test.lock", ".train_valid_test.in-use", "trainLabels.csv"}  # no staging left


def test_outputs_get_ordinary_file_permissions(tmp_path):
    from gluon_cifar.fs import write_json
    old = os.umask(0o022)
    try:
        write_json(str(tmp_path / "a.json"), {"x": 1})
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o644
