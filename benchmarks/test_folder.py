"""A Kaggle-size test folder: the real test images as 1.png..N.png, then transformed copies up to `total`.

Kaggle's CIFAR-10 test set had 300,000 images (10,000 scored, the rest decoys); `make_test_folder` makes a
folder of that size from the 10,000 here, so prediction is measured at the real size:
`python benchmarks/test_folder.py SRC_TEST_DIR DST [--total 300000]`. The real images are hard-linked; each
copy is a real image flipped, shifted and brightened by amounts drawn from a seeded generator, written as
PNG (each file renamed into place when whole). A smaller
folder grows into a larger one with the same first images; complete folders (marker file) are reused.
"""
import argparse
import os
import sys

import cv2
import numpy as onp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from gluon_cifar.images import list_images
from gluon_cifar.data.fastdata import decode_batch

_MARKER = ".complete"


def transformed(img, rng):
    """A plausible new test image from `img` (uint8 HWC RGB): flip, shift by up to 4 pixels, brightness."""
    if rng.random() < 0.5:
        img = img[:, ::-1]
    dy, dx = rng.integers(-4, 5, size=2)
    img = onp.roll(img, (dy, dx), axis=(0, 1))
    return onp.clip(img.astype(onp.int16) + rng.integers(-24, 25), 0, 255).astype(onp.uint8)


def make_test_folder(src, dst, total, seed=0):
    """Fill `dst` with `total` test images made from the `<id>.png` files of `src`; return `dst`."""
    marker = os.path.join(dst, _MARKER)
    if os.path.isfile(marker) and open(marker).read() == str(total):
        return dst
    os.makedirs(dst, exist_ok=True)
    paths = [path for _, path in list_images(src)]
    real = min(total, len(paths))
    for i in range(real):
        target = os.path.join(dst, f"{i + 1}.png")
        if not os.path.exists(target):
            os.link(paths[i], target)
    images = decode_batch(paths[:real])
    rng = onp.random.default_rng(seed)
    for image_id in range(real + 1, total + 1):
        img = transformed(images[rng.integers(real)], rng)  # drawn even when kept: same folder for any total
        target = os.path.join(dst, f"{image_id}.png")
        if not os.path.exists(target):
            cv2.imwrite(os.path.join(dst, ".partial.png"), img[:, :, ::-1])
            os.replace(os.path.join(dst, ".partial.png"), target)
    with open(marker, "w") as f:
        f.write(str(total))
    return dst


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="folder of <id>.png test images (e.g. the unpacked test.7z)")
    parser.add_argument("dst")
    parser.add_argument("--total", type=int, default=300_000)
    args = parser.parse_args()
    print(make_test_folder(args.src, args.dst, args.total))


if __name__ == "__main__":
    main()
