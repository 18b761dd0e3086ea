"""What the reorganisation costs: `python benchmarks/reorg_check.py DATA_DIR [--repeats N]`.

On the same Kaggle-layout folder (read only): the whole first-run `reorg_cifar10_data` (listing, the
decode check of every training and test image, hard links) into a fresh temporary folder, the re-run
that finds it complete (the exact-reuse check: CSV hash and every source file's identity), and the
decode check alone (`images.read_original`, or `images.image_size` where that is absent) over the same
files. Prints median [min-max] of each, the check's share of the reorganisation, the machine and the
library versions. Run it with PYTHONPATH set to a baseline checkout, then to the candidate, to compare.
"""
import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile

import PIL

import gluon_cifar
from gluon_cifar import images
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.images import list_images
from run import timed  # benchmarks/run.py, beside this script


def summary(seconds):
    return f"{statistics.median(seconds):7.2f} s [{min(seconds):.2f}-{max(seconds):.2f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="Kaggle-layout folder with train/, test/, trainLabels.csv")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", default=tempfile.gettempdir(),
                        help="where the temporary reorganisations go (same filesystem: hard links)")
    args = parser.parse_args()
    files = [path for split in ("train", "test") for _, path in list_images(os.path.join(args.data_dir, split))]

    decode_check = getattr(images, "read_original", images.image_size)
    target = tempfile.mkdtemp(dir=args.work_dir, prefix="reorg_check.")

    def reorg():
        shutil.rmtree(target)
        os.makedirs(target)
        reorg_cifar10_data(args.data_dir, 0.1, os.path.join(target, "train_valid_test"))

    def rerun():
        reorg_cifar10_data(args.data_dir, 0.1, os.path.join(target, "train_valid_test"))

    def check():
        for path in files:
            decode_check(path)

    check()  # warm the page cache so both rows read from memory
    try:
        rows = {"reorg (first run, check included)": timed(reorg, args.repeats, warmup=0),
                "reorg re-run (reused)": timed(rerun, args.repeats, warmup=0),
                f"decode check alone ({decode_check.__name__})": timed(check, args.repeats, warmup=0)}
    finally:
        shutil.rmtree(target)
    print(f"{len(files)} images in {args.data_dir}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; Python {platform.python_version()}, Pillow {PIL.__version__}, "
          f"gluon_cifar {gluon_cifar.__version__}")
    for name, seconds in rows.items():
        print(f"{name:36s} {summary(seconds)}")
    check_seconds = statistics.median(rows[f"decode check alone ({decode_check.__name__})"])
    share = check_seconds / statistics.median(rows["reorg (first run, check included)"])
    print(f"check / reorg: {share:.2f}; per image: {1e6 * check_seconds / len(files):.0f} us")


if __name__ == "__main__":
    sys.exit(main())
