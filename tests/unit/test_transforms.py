"""gluon_cifar.data.transforms: padcrop and cutout in MXNet's operators, drawn uniformly."""
import random

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np
from scipy import stats

from gluon_cifar.data.transforms import ReflectPad, make_train_transform
from gluon_cifar.errors import InputError
from gluon_cifar.images import CIFAR10_MEAN, CIFAR10_STD

ALPHA = 1e-3  # the chance that a correct transform fails one distribution check


def random_image(seed=0):
    return onp.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=onp.uint8)


def to_pixels(tensor):
    """Undo ToTensor + Normalize: CHW floats back to HWC 0-255 values."""
    chw = tensor.asnumpy() * onp.array(CIFAR10_STD)[:, None, None] + onp.array(CIFAR10_MEAN)[:, None, None]
    return onp.rint(chw.transpose(1, 2, 0) * 255)


def test_reflect_pad_mirrors_without_repeating_the_edge():
    img = random_image()
    padded = ReflectPad(4)(np.array(img)).asnumpy()
    assert (padded == onp.pad(img, ((4, 4), (4, 4), (0, 0)), mode="reflect")).all()
    assert (padded[4, 3] == img[0, 1]).all()


def padcrop_windows(n):
    """(top, left, mirrored) of `n` padcrop outputs, each found among the 9 x 9 x 2 unresampled windows
    of the reflect-padded image and their mirrors (a KeyError if one is not such a window)."""
    img = random_image()
    padded = onp.pad(img, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    windows = {}
    for dy in range(9):
        for dx in range(9):
            window = padded[dy:dy + 32, dx:dx + 32]
            windows[window.tobytes()], windows[window[:, ::-1].tobytes()] = (dy, dx, 0), (dy, dx, 1)
    transform = make_train_transform("padcrop")
    return [windows[to_pixels(transform(np.array(img))).astype(onp.uint8).tobytes()] for _ in range(n)]


def cutout_corners(n, size=8):
    """Top-left corners of the mean-pixel squares `n` padcrop + cutout outputs of a white image hold."""
    white, corners = np.array(onp.full((32, 32, 3), 255, dtype=onp.uint8)), []
    transform = make_train_transform("padcrop", cutout=size)
    for _ in range(n):
        ys, xs = onp.nonzero((to_pixels(transform(white)) != 255).any(axis=2))
        assert len(ys) == size * size
        corners.append((ys.min(), xs.min()))
    return corners


def uniform(values, count):
    """p-value of a chi-square goodness of fit of integer `values` to the uniform distribution on 0 .. count-1."""
    return stats.chisquare(onp.bincount(values, minlength=count)).pvalue


def test_padcrop_draws_every_unresampled_window_and_mirror_uniformly():
    """Offsets and flips as GluonCV's RandomCrop + MXNet's flip draw them: uniform, on 900 draws."""
    random.seed(0)
    mx.random.seed(0)
    draws = padcrop_windows(900)
    for k, count in ((0, 9), (1, 9), (2, 2)):
        assert uniform([draw[k] for draw in draws], count) > ALPHA


def test_cutout_square_lies_anywhere_inside_the_image_uniformly():
    random.seed(0)
    corners = cutout_corners(500)
    for k in (0, 1):
        assert uniform([corner[k] for corner in corners], 32 - 8 + 1) > ALPHA


def test_cutout_fills_one_square_with_the_mean_pixel():
    white = onp.full((32, 32, 3), 255, dtype=onp.uint8)
    pixels = to_pixels(make_train_transform("padcrop", cutout=8)(np.array(white)))
    ys, xs = onp.nonzero((pixels != 255).any(axis=2))
    assert len(ys) == 64 and ys.max() - ys.min() == 7 and xs.max() - xs.min() == 7
    assert (pixels[ys[0], xs[0]] == [int(255 * m) for m in CIFAR10_MEAN]).all()


@pytest.mark.parametrize("augment,cutout", [("chapter", 8), ("padcrop", 32), ("padcrop", -1)])
def test_cutout_out_of_range_or_without_padcrop_is_an_input_error(augment, cutout):
    with pytest.raises(InputError):
        make_train_transform(augment, cutout)


