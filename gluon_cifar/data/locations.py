"""Where a run's output folder and the reorganisation may go: never onto or into the user's data, never
overlapping each other, and a reorganisation folder only where it is empty, new or the package's own.
Checked before any work (pipeline, `reorganised`), so a bad folder is refused before anything is written.
"""
import os

from gluon_cifar import fs
from gluon_cifar.errors import InputError
from gluon_cifar.fs import OWNER_MARKER

REORG_DIRNAME = "train_valid_test"  # the reorganisation's folder in the data folder, unless --reorg-dir


def is_within(path, folder):
    """Whether real path `path` is `folder` or lies inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_location(data_dir, path, what):
    """Refuse `path` as a folder to write into (`what` names it, e.g. '--output-dir') where it would
    touch the user's data: the data folder, its `train/` or `test/`, a folder that holds them, or a
    folder inside `train/` or `test/` (every later run would refuse it as a stray file)."""
    real = os.path.realpath(path)
    data = os.path.realpath(data_dir)
    sources = [data] + [os.path.realpath(os.path.join(data_dir, split)) for split in ("train", "test")]
    for source in sources:
        if is_within(source, real):
            raise InputError(f"{what} {path} is or holds the data folder's {source}: writing there could "
                             "replace the data; choose a folder of its own")
    for source in sources[1:]:
        if is_within(real, source):
            raise InputError(f"{what} {path} is inside {source}, where a folder breaks every later run: "
                             "choose a folder outside train/ and test/")


def check_data_folder(data_dir):
    if not os.path.isdir(data_dir):
        raise InputError(f"{data_dir}: {'not a folder' if os.path.exists(data_dir) else 'data folder not found'}")


def check_run_folders(data_dir, reorg_dir, output_dir):
    """The checks a training run makes before any work: its output and reorganisation folders are kept
    apart from the data and from each other, and the reorganisation folder is one the package may fill."""
    reorg_dir = reorg_dir or os.path.join(data_dir, REORG_DIRNAME)
    check_output_location(data_dir, output_dir, "--output-dir")
    check_output_location(data_dir, reorg_dir, "--reorg-dir")
    out, reorg = os.path.realpath(output_dir), os.path.realpath(reorg_dir)
    if is_within(out, reorg) or is_within(reorg, out):
        raise InputError(f"--output-dir {output_dir} and the reorganisation folder {reorg_dir} overlap: "
                         "a rebuilt reorganisation would take the outputs with it; keep them apart")
    check_reorg_target(reorg_dir)


def check_reorg_target(reorg_dir):
    """Refuse a reorganisation folder that exists and is neither empty nor the package's own."""
    if os.path.lexists(reorg_dir) and not os.path.isdir(reorg_dir):
        raise InputError(f"--reorg-dir {reorg_dir} exists and is not a folder")
    if os.path.isdir(reorg_dir) and os.listdir(reorg_dir) and not fs.is_marked(reorg_dir):
        raise InputError(f"--reorg-dir {reorg_dir} holds files and was not made by gluon_cifar "
                         f"(no {OWNER_MARKER} marker): give an empty or new folder")
