"""gluon_cifar.data.fastdata: the decoded-once path draws the chapter's augmentation and batches every image
once."""
import os

import mxnet as mx
import numpy as onp
from mxnet import image
from mxnet.gluon.data.vision import transforms
from scipy import stats

from gluon_cifar.data import fastdata
from gluon_cifar.data import transforms as data_transforms
from gluon_cifar.data.loaders import ImageFilesDataset
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.transforms import chapter_train_transform
from gluon_cifar.deploy import fastinfer
from gluon_cifar.deploy import predict as deploy_predict
from gluon_cifar.deploy.export import load_exported
from gluon_cifar.images import CIFAR10_MEAN, CIFAR10_STD

from conftest import tiny_images

SAMPLES = 3000  # per pipeline, for the distribution test


ALPHA = 1e-3    # the chance that a correct pipeline fails one of the distribution checks is about 4 * ALPHA


def test_augment_gives_the_chapters_pixels_for_the_same_crop_and_flip():
    images = fastdata.decode_batch(tiny_images(1, 32))
    params = fastdata.crop_params(len(images), onp.random.default_rng(0))
    ours = fastdata.augment(images, params)
    resize = transforms.Resize(fastdata.RESIZE)
    for img, out, (side, left, top, flip) in zip(images, ours, zip(*params)):
        chapter = image.fixed_crop(resize(mx.np.array(img)), left, top, side, side, (32, 32), 1).asnumpy()
        onp.testing.assert_array_equal(out, chapter[:, ::-1] if flip else chapter)


def coordinate_image():
    """A 32x32 image whose red value is 7 * column and green 7 * row, so an output reveals its crop."""
    ys, xs = onp.mgrid[0:32, 0:32]
    return onp.stack([7 * xs, 7 * ys, onp.full_like(xs, 128)], axis=-1).astype(onp.uint8)


def crop_of(out):
    """(side, left, top, flipped) of the crop that made `out` (float HWC in 0-255) from `coordinate_image`.

    Output column j samples column u = left + (j + 0.5) * side / 32 - 0.5 of the 40x40 image, which
    samples (u + 0.5) * 0.8 - 0.5 of the original; columns 4 and 27 are inside both images, where
    bilinear interpolation is exactly linear (up to rounding to uint8).
    """
    flipped = out[16, 27, 0] < out[16, 4, 0]
    if flipped:
        out = out[:, ::-1]
    slope = (out[16, 27, 0] - out[16, 4, 0]) / 23 / 7      # original pixels per output pixel = side / 40
    side = slope * 40

    def start(value, j=4):
        return (value / 7 + 0.5) / 0.8 - (j + 0.5) * side / 32

    return round(side), round(start(out[16, 4, 0])), round(start(out[4, 16, 1])), flipped


def chapter_samples(n):
    """Crops the chapter's own training transform makes, read back from its normalised output."""
    transform, img = chapter_train_transform(), mx.np.array(coordinate_image())
    outs = [transform(img).asnumpy() for _ in range(n)]
    return [crop_of(unnormalize(out)) for out in outs]


def fast_samples(n, scale=fastdata.CROP_SCALE):
    """Crops the fast path makes (augment, then normalize, as FastLoader does), read back the same way."""
    images = onp.repeat(coordinate_image()[None], n, axis=0)
    outs = fastdata.normalize(fastdata.augment(images, fastdata.crop_params(n, scale=scale))).asnumpy()
    return [crop_of(unnormalize(out)) for out in outs]


def unnormalize(chw):
    hwc = chw.transpose(1, 2, 0)
    return (hwc * onp.array(CIFAR10_STD) + onp.array(CIFAR10_MEAN)) * 255


def same_distribution(a, b):
    """Chi-square test of homogeneity of two samples of a discrete variable: its p-value."""
    values = sorted(set(a) | set(b))
    table = onp.array([[list(sample).count(v) for v in values] for sample in (a, b)])
    return stats.chi2_contingency(table)[1]


def test_fast_path_draws_the_chapters_crop_sizes_positions_and_flips():
    mx.random.seed(1)
    onp.random.seed(1)
    chapter, ours = chapter_samples(SAMPLES), fast_samples(SAMPLES)
    for sample in (chapter, ours):
        for side, left, top, _ in sample:
            assert 32 <= side <= 40 and 0 <= left <= 40 - side and 0 <= top <= 40 - side
    for k, what in enumerate(("crop side", "left", "top", "flip")):
        p = same_distribution([s[k] for s in chapter], [s[k] for s in ours])
        assert p > ALPHA, f"{what}: p = {p:.2g}"
    assert abs(onp.mean([s[3] for s in ours]) - 0.5) < 0.05


def test_the_distribution_check_rejects_a_different_crop_scale():
    """The same check tells apart a pipeline whose crops are drawn from 50-100% of the area."""
    onp.random.seed(2)
    chapter, wider = fast_samples(SAMPLES), fast_samples(SAMPLES, scale=(0.5, 1.0))
    assert same_distribution([s[0] for s in chapter], [s[0] for s in wider]) < ALPHA


def test_fast_loader_batches_every_split_image_once_from_a_reused_cache(tiny_copy):
    reorg_dir = reorg_cifar10_data(tiny_copy, 0.1)
    images, labels, synsets = fastdata.decoded_split(reorg_dir, "train")
    cache = os.path.join(reorg_dir, "train.uint8.npz")
    stamp = os.stat(cache).st_mtime_ns
    again = fastdata.decoded_split(reorg_dir, "train")
    assert os.stat(cache).st_mtime_ns == stamp
    onp.testing.assert_array_equal(again[0], images)
    dataset = mx.gluon.data.vision.ImageFolderDataset(os.path.join(reorg_dir, "train"))
    assert synsets == dataset.synsets and len(images) == len(dataset)
    onp.testing.assert_array_equal(images[7], dataset[7][0].asnumpy())
    assert labels[7] == dataset[7][1]

    loader = fastdata.FastLoader(images, labels, 64, shuffle=False, last_batch="keep", augment=False)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-len(images) // 64)
    X = onp.concatenate([x.asnumpy() for x, _ in batches])
    assert X.shape == (len(images), 3, 32, 32) and X.dtype == onp.float32
    onp.testing.assert_array_equal(X[7], data_transforms.test_transform()(dataset[7][0]).asnumpy())
    onp.testing.assert_array_equal(onp.concatenate([y.asnumpy() for _, y in batches]), labels)

    train = fastdata.FastLoader(images, labels, 64)
    seen = onp.concatenate([y.asnumpy() for _, y in train])
    assert len(seen) == len(train) * 64  # the tail is discarded, as by the chapter's training loader
    assert (onp.bincount(seen, minlength=10) <= onp.bincount(labels, minlength=10)).all()


def test_fused_flip_tta_predicts_as_the_plain_flip_tta(reference_prefix, tmp_path):
    """Images and mirrors in one graph of twice the batch give `predict --tta flip`'s classes; 100 = 3 full
    batches of 32 and a padded one."""
    for path in tiny_images(801, 100):
        os.symlink(path, tmp_path / os.path.basename(path))
    net, _ = load_exported(reference_prefix, mx.cpu())
    held = ImageFilesDataset(str(tmp_path))
    ids, chapter = deploy_predict.predict(net, held, deploy_predict.Inference(50, mx.cpu(), tta="flip"))
    _, plain = deploy_predict.predict(net, held, deploy_predict.Inference(50, mx.cpu()))
    fused, _ = fastinfer.load_fast(reference_prefix, 32, tta="flip")
    fast_ids, ours = fastinfer.predict_fast(fused, str(tmp_path), 32, tta="flip")
    assert fast_ids == ids and ours == chapter
    assert ours != plain  # the mirrors changed some predictions, so they were averaged in
