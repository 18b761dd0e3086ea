"""The fast paths give the chapter's results: augmentation (pixels and distribution), normalisation,
the decoded-once loader, fused and INT8 inference, and the `predict --fast/--int8` command.
No timing here: speed is measured side by side by benchmarks/run.py."""
import json
import os

import mxnet as mx
import numpy as onp
import pytest
from mxnet import image
from mxnet.gluon.data.vision import transforms
from scipy import stats

from clitools import assert_one_error_line, run
from conftest import CLASSES, REFERENCE_PARAMS, TINY
from gluon_cifar import predict
from gluon_cifar.data import fastdata
from gluon_cifar.deploy import fastinfer
from gluon_cifar.deploy.export import export_model, legacy_symbol, load_exported
from gluon_cifar.model import resnet18
from gluon_cifar.data import transforms as data_transforms
from gluon_cifar.data.loaders import ImageFilesDataset
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.transforms import chapter_train_transform
from gluon_cifar.images import CIFAR10_MEAN, CIFAR10_STD

SAMPLES = 3000  # per pipeline, for the distribution test
ALPHA = 1e-3    # the chance that a correct pipeline fails one of the distribution checks is about 4 * ALPHA


def tiny_images(first, count):
    return [os.path.join(TINY, "train", f"{i}.png") for i in range(first, first + count)]


@pytest.fixture(scope="module")
def reference_prefix(tmp_path_factory):
    if not os.path.isfile(REFERENCE_PARAMS):
        pytest.skip("../shared/models/resnet18_reference.params is not present")
    net = resnet18(len(CLASSES))
    net.load_parameters(REFERENCE_PARAMS)
    net.hybridize()
    net(mx.np.zeros((1, 3, 32, 32)))
    prefix = str(tmp_path_factory.mktemp("reference") / "model")
    export_model(net, prefix, CLASSES)
    return prefix


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """Flat folders of tiny's training images: `calib` (ids 1-256) and `held` (ids 801-1000)."""
    if not os.path.isdir(TINY):
        pytest.skip("../shared/data/cifar10_tiny is not present")
    root = tmp_path_factory.mktemp("flat")
    for name, first, count in (("calib", 1, 256), ("held", 801, 200)):
        os.makedirs(root / name)
        for path in tiny_images(first, count):
            os.symlink(path, root / name / os.path.basename(path))
    return root


# Augmentation and normalisation

def test_augment_gives_the_chapters_pixels_for_the_same_crop_and_flip():
    images = fastdata.decode_batch(tiny_images(1, 32))
    params = fastdata.crop_params(len(images), onp.random.default_rng(0))
    ours = fastdata.augment(images, params)
    resize = transforms.Resize(fastdata.RESIZE)
    for img, out, (side, left, top, flip) in zip(images, ours, zip(*params)):
        chapter = image.fixed_crop(resize(mx.np.array(img)), left, top, side, side, (32, 32), 1).asnumpy()
        onp.testing.assert_array_equal(out, chapter[:, ::-1] if flip else chapter)


def test_normalize_equals_the_chapters_test_transform():
    images = fastdata.decode_batch(tiny_images(1, 16))
    chapter = onp.stack([data_transforms.test_transform()(mx.np.array(img)).asnumpy() for img in images])
    onp.testing.assert_array_equal(fastdata.normalize(images).asnumpy(), chapter)


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


# The decoded-once loader

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


# Fused and INT8 inference

@pytest.mark.slow
def test_fusable_graph_fuses_every_convolution_and_predicts_as_the_export(reference_prefix, tiny_folder):
    fused_ops = [node["op"] for node in json.loads(
        legacy_symbol(reference_prefix + "-symbol.json").get_backend_symbol("MKLDNN").tojson())["nodes"]]
    assert fused_ops.count("_sg_mkldnn_conv") == 20 and "Convolution" not in fused_ops
    net, classes = load_exported(reference_prefix, mx.cpu())
    ids, chapter = predict.predict(net, ImageFilesDataset(str(tiny_folder / "held")), 50, mx.cpu())
    fused, fused_classes = fastinfer.load_fast(reference_prefix, 64)  # 200 = 3 full batches + a padded one
    fast_ids, ours = fastinfer.predict_fast(fused, str(tiny_folder / "held"), 64)
    assert fused_classes == classes and fast_ids == ids and ours == chapter


def test_fused_flip_tta_predicts_as_the_plain_flip_tta(reference_prefix, tiny_folder):
    """Images and mirrors in one graph of twice the batch give `predict --tta flip`'s classes; 200 = 3 full
    batches of 64 and a padded one."""
    net, _ = load_exported(reference_prefix, mx.cpu())
    ids, chapter = predict.predict(net, ImageFilesDataset(str(tiny_folder / "held")), 50, mx.cpu(), tta="flip")
    _, plain = predict.predict(net, ImageFilesDataset(str(tiny_folder / "held")), 50, mx.cpu())
    fused, _ = fastinfer.load_fast(reference_prefix, 64, tta="flip")
    fast_ids, ours = fastinfer.predict_fast(fused, str(tiny_folder / "held"), 64, tta="flip")
    assert fast_ids == ids and ours == chapter
    assert ours != plain  # the mirrors changed some predictions, so they were averaged in


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_200_images_it_was_not_calibrated_on(reference_prefix, tiny_folder):
    calib = fastinfer.read_calibration_images(str(tiny_folder / "calib"), 256)
    fp32, _ = fastinfer.load_fast(reference_prefix, 100)
    int8, _ = fastinfer.load_fast(reference_prefix, 100, calib)
    _, p32 = fastinfer.predict_fast(fp32, str(tiny_folder / "held"), 100)
    _, p8 = fastinfer.predict_fast(int8, str(tiny_folder / "held"), 100)
    assert onp.mean(onp.array(p32) == onp.array(p8)) >= 0.99


def test_predict_int8_command_writes_the_submission(reference_prefix, tiny_folder, tmp_path):
    out = tmp_path / "submission.csv"
    result = run("predict", "--model", reference_prefix, "--images", TINY + "/test", "--output", out,
                 "--int8", tiny_folder / "calib", "--calib-size", 64, "--batch-size", 4, "--tta", "flip")
    assert result.returncode == 0, result.stderr
    rows = out.read_text().splitlines()
    assert rows[0] == "id,label" and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    assert all(r.split(",")[1] in CLASSES for r in rows[1:])


def test_predict_int8_without_calibration_images_is_one_error_line(reference_prefix, tmp_path):
    result = run("predict", "--model", reference_prefix, "--images", TINY + "/test", "--output",
                 tmp_path / "s.csv", "--int8", tmp_path / "missing")
    assert_one_error_line(result, "missing")
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.slow
def test_train_command_with_fast_data_trains_and_writes_its_outputs(kaggle_dir, tmp_path):
    out = tmp_path / "out"
    result = run("train", "--data-dir", kaggle_dir, "--epochs", 2, "--batch-size", 4, "--valid-ratio", 0.3,
                 "--fast-data", "--output-dir", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["examples"] for m in metrics] == [24, 24]  # 30 images - 6 valid, whole batches of 4
    assert len((out / "submission.csv").read_text().splitlines()) == 1 + 7
    assert os.path.isfile(os.path.join(kaggle_dir, "train_valid_test", "train.uint8.npz"))


def test_fast_data_refuses_an_augmentation_it_does_not_have(kaggle_dir, tmp_path):
    result = run("train", "--data-dir", kaggle_dir, "--fast-data", "--augment", "padcrop",
                 "--output-dir", tmp_path / "out")
    assert_one_error_line(result, "--fast-data")
    assert not (tmp_path / "out").exists()
