"""Transforms: the chapter's augmentation and test transform, and the padcrop/cutout augmentation of the
strong recipe, built from MXNet's own operators (no GluonCV)."""
import random

from mxnet import gluon, image, np
from mxnet.gluon.data.vision import transforms

from gluon_cifar.images import CIFAR10_MEAN, CIFAR10_STD
from gluon_cifar.settings import check_cutout


def chapter_train_transform():
    """The chapter's augmentation: upscale to 40, random square crop of 64-100% area back to 32, flip."""
    return transforms.Compose([
        transforms.Resize(40),
        transforms.RandomResizedCrop(32, scale=(0.64, 1.0), ratio=(1.0, 1.0)),
        transforms.RandomFlipLeftRight(),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])


def test_transform():
    """The chapter's evaluation transform: only tensor layout and normalisation."""
    return transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])


class ReflectPad(gluon.HybridBlock):
    """Pad an HWC image by `pad` pixels on each side with its mirror image (edge pixels not repeated)."""

    def __init__(self, pad):
        super().__init__()
        self._pad_width = ((pad, pad), (pad, pad), (0, 0))

    def hybrid_forward(self, F, x):
        return F.np.pad(x, self._pad_width, mode="reflect")


class RandomCrop(gluon.Block):
    """A random `size` x `size` window of an HWC image, not resampled (MXNet's `image.random_crop`)."""

    def __init__(self, size):
        super().__init__()
        self._size = (size, size)

    def forward(self, x):
        return image.random_crop(x, self._size)[0]


class Cutout(gluon.Block):
    """Fill one random `size` x `size` square that lies inside an HWC image with the pixel `fill`.

    MXNet 1.9.1 has no random erasing; this is GluonCV's `RandomErasing` fixed to a square, always applied.
    """

    def __init__(self, size, fill):
        super().__init__()
        self._size, self._fill = size, fill

    def forward(self, x):
        height, width, _ = x.shape
        top, left = random.randint(0, height - self._size), random.randint(0, width - self._size)
        x = x.copy()
        x[top:top + self._size, left:left + self._size] = np.array(self._fill, dtype=x.dtype)
        return x


def padcrop_train_transform(cutout=0):
    """The usual CIFAR augmentation: reflect-pad 4, random 32x32 crop, flip; no resampling, unlike the chapter's.

    With `cutout` > 0, one random `cutout` x `cutout` square inside the image is filled with the mean pixel.
    """
    steps = [ReflectPad(4), RandomCrop(32), transforms.RandomFlipLeftRight()]
    if cutout:
        steps.append(Cutout(cutout, tuple(int(255 * m) for m in CIFAR10_MEAN)))
    return transforms.Compose(steps + [test_transform()])


def make_train_transform(augment="chapter", cutout=0):
    """The training transform named `augment` (one of AUGMENTATIONS); cutout is offered with padcrop."""
    check_cutout(augment, cutout)
    if augment == "chapter":
        return chapter_train_transform()
    return padcrop_train_transform(cutout)


