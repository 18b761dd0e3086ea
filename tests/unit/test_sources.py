"""gluon_cifar.data.sources: the competition archives, the demo download and the bundled sample, unpacked
through staging."""
import collections
import functools
import http.server
import logging
import os
import shutil
import subprocess
import sys
import threading
import zipfile

import pytest

from gluon_cifar import fs
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.sources import (_SAMPLE_STAMP, BUNDLED_SAMPLE, DEMO_URL_VARIABLE, bundled_sample, demo_data_dir,
                                      unpacking_folder)
from gluon_cifar.errors import InputError
from gluon_cifar.fs import OWNER_MARKER, write_json
from gluon_cifar.train import main

from clitools import snapshot
from conftest import CLASSES, REPO, SIZES, TINY, UNREACHABLE, class_files, placed, sample_ids, tree_snapshot


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




def test_download_only_fails_with_one_line(offline, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--demo-source", "download", "--cache-dir", str(tmp_path / "cache"),
              "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot download the demo set from " + UNREACHABLE)
    assert "--data-dir /path" in lines[0] and "--demo-source bundled" in lines[0]
    assert not (tmp_path / "cache" / "demo_sample").exists()


def test_under_make_the_messages_name_make_s_variable(offline, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("GLUON_CIFAR_VIA_MAKE", "1")
    with pytest.raises(InputError, match="make demo DATA_DIR=/path") as err:
        demo_data_dir(str(tmp_path / "cache"), "download")
    assert "--data-dir" not in str(err.value) and "--demo-source" not in str(err.value)
    with caplog.at_level(logging.WARNING, logger="gluon_cifar"):
        folder = demo_data_dir(str(tmp_path / "cache"), "auto")
    assert folder == str(tmp_path / "cache" / "demo_sample")
    assert [r.getMessage() for r in caplog.records if "make demo DATA_DIR=/path" in r.getMessage()]


def test_a_download_with_the_wrong_sha1_is_removed_and_the_sample_used(tmp_path, monkeypatch, caplog):
    # A mirror (or a proxy's error page) serving another file: a real HTTP server on this machine.
    www = tmp_path / "www"
    www.mkdir()
    (www / "kaggle_cifar10_tiny.zip").write_bytes(b"<html>proxy login</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        monkeypatch.setenv(DEMO_URL_VARIABLE, f"http://127.0.0.1:{server.server_port}/kaggle_cifar10_tiny.zip")
        with caplog.at_level(logging.WARNING, logger="gluon_cifar"):
            folder = demo_data_dir(str(tmp_path / "cache"), "auto")
        server.shutdown()
    assert folder == str(tmp_path / "cache" / "demo_sample")
    assert any("wrong SHA-1" in r.getMessage() and "bundled" in r.getMessage() for r in caplog.records)
    # the bad download removed by the cache's manifest, which d2l's write was recorded in; nothing else
    assert sorted(os.listdir(tmp_path / "cache")) == [fs.MANIFEST, "demo_sample"]
    assert sorted(os.listdir(tmp_path)) == ["cache", "www"] and os.listdir(www) == ["kaggle_cifar10_tiny.zip"]


def test_the_bundled_sample_is_real_cifar10_in_the_kaggle_layout(tmp_path):
    with zipfile.ZipFile(BUNDLED_SAMPLE) as z:
        z.extractall(tmp_path)
    labels = read_csv_labels(str(tmp_path / "trainLabels.csv"))  # the package's own checks: header id,label
    per_class = collections.Counter(labels.values())
    assert sorted(per_class) == sorted(CLASSES) and len(set(per_class.values())) == 1, per_class
    assert sorted(map(int, labels)) == sample_ids(tmp_path / "train")
    assert sample_ids(tmp_path / "test") == [1, 2, 3, 4, 5]
    assert sorted(os.listdir(tmp_path)) == ["test", "train", "trainLabels.csv"]
    assert os.path.getsize(BUNDLED_SAMPLE) < 2 * 2 ** 20
    if not os.path.isdir(TINY):
        pytest.skip("../shared/data/cifar10_tiny is not present")
    tiny = read_csv_labels(os.path.join(TINY, "trainLabels.csv"))
    assert all(tiny[image_id] == label for image_id, label in labels.items())
    for split, ids in (("train", labels), ("test", ["1", "2", "3", "4", "5"])):
        for image_id in ids:
            with open(tmp_path / split / f"{image_id}.png", "rb") as ours, \
                    open(os.path.join(TINY, split, f"{image_id}.png"), "rb") as theirs:
                assert ours.read() == theirs.read(), (split, image_id)


KILLED_UNPACK = """
import os, signal, sys
from gluon_cifar import fs
staging = fs.staging_dir(sys.argv[1])
fs.make_dirs(os.path.join(staging, "train"), fs.Manifest(staging))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_sample_is_unpacked_inside_the_cache_dir_once(tmp_path):
    (tmp_path / "beside.txt").write_text("not ours")
    cache = tmp_path / "cache"
    subprocess.run([sys.executable, "-c", KILLED_UNPACK, str(cache / "demo_sample")])  # an unpack killed half way
    assert len(os.listdir(cache)) == 1
    folder = bundled_sample(str(cache))
    assert sorted(os.listdir(tmp_path)) == ["beside.txt", "cache"]
    assert os.listdir(cache) == ["demo_sample"]
    (cache / "demo_sample" / "train_valid_test").mkdir()  # what training adds; reused with the sample
    before = snapshot(folder, skip=())
    assert bundled_sample(str(cache)) == folder
    assert snapshot(folder, skip=()) == before and (cache / "demo_sample" / "train_valid_test").is_dir()


@pytest.mark.parametrize("name", ["demo_sample.unpacking", ".demo_sample.99999999.abcdefgh.tmp"])
def test_an_unpacking_folder_the_package_did_not_make_is_kept(tmp_path, name):
    staging = tmp_path / "cache" / name
    staging.mkdir(parents=True)
    (staging / "draft.txt").write_text("mine")
    bundled_sample(str(tmp_path / "cache"))
    assert sorted(os.listdir(tmp_path / "cache")) == sorted([name, "demo_sample"])
    assert os.listdir(staging) == ["draft.txt"]


def test_an_older_unpack_is_replaced_and_a_foreign_folder_refused(tmp_path):
    folder = bundled_sample(str(tmp_path / "cache"))
    write_json(os.path.join(folder, _SAMPLE_STAMP), {"sha1": "an older package's archive"})
    os.remove(os.path.join(folder, "trainLabels.csv"))
    assert bundled_sample(str(tmp_path / "cache")) == folder
    assert os.path.isfile(os.path.join(folder, "trainLabels.csv"))

    foreign = tmp_path / "other" / "demo_sample"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("the user's")
    with pytest.raises(InputError, match="is not the bundled sample"):
        bundled_sample(str(tmp_path / "other"))
    assert os.listdir(foreign) == ["notes.txt"] and os.listdir(tmp_path / "other") == ["demo_sample"]


def test_setup_py_ships_the_sample(tmp_path):
    # build_py is the step of `pip wheel` / bdist_wheel that gathers package files: a wheel holds what it puts.
    src = tmp_path / "src"
    shutil.copytree(os.path.join(REPO, "gluon_cifar"), src / "gluon_cifar",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(REPO, "setup.py"), src)
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")],
                   cwd=src, check=True, capture_output=True)
    with open(tmp_path / "lib" / "gluon_cifar" / "data" / "demo_sample.zip", "rb") as built, \
            open(BUNDLED_SAMPLE, "rb") as ours:
        assert built.read() == ours.read()


@pytest.mark.parametrize("name", [".train.unpacking", ".train.99999999.abcdefgh.tmp"])
def test_an_unpacking_folder_of_the_users_is_not_removed(root, tmp_path, name):
    import py7zr
    download = tmp_path / "download"
    (download / name).mkdir(parents=True)
    (download / name / "draft.txt").write_text("mine")
    with py7zr.SevenZipFile(download / "train.7z", "w") as z:
        z.writeall(os.path.join(root, "train"), "train")
    shutil.copytree(os.path.join(root, "test"), download / "test")
    shutil.copyfile(os.path.join(root, "trainLabels.csv"), download / "trainLabels.csv")
    assert len(placed(reorg_cifar10_data(str(download), 0.25))) == 30  # unpacked in a staging folder of its own
    assert (download / name / "draft.txt").read_text() == "mine"


def test_an_unpacking_folder_is_the_package_s_from_start_to_end(tmp_path):
    """Renamed into place: the rest goes; the unpack failed: all of it goes."""
    with unpacking_folder(str(tmp_path / "x")) as folder:
        assert sorted(os.listdir(folder)) == sorted([fs.MANIFEST, OWNER_MARKER])
        os.makedirs(os.path.join(folder, "x", "deep"))
        (tmp_path / "elsewhere").write_bytes(b"unpacked")  # (a library's write, which the block records)
        os.link(tmp_path / "elsewhere", os.path.join(folder, "half.png"))
        fs.rename_into_place(os.path.join(folder, "x"), str(tmp_path / "x"))
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "x"]

    with pytest.raises(RuntimeError, match="unpack failed"):
        with unpacking_folder(str(tmp_path / "y")) as folder:
            with open(os.path.join(folder, "half.png"), "wb") as f:
                f.write(b"half")
            raise RuntimeError("unpack failed")
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "x"]
