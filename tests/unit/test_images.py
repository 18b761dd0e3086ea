"""gluon_cifar.images: every image decoded as training reads it; ids, truncation, decompression bombs, formats
MXNet cannot read."""
import os
import shutil

import mxnet as mx
import numpy as onp
import pytest
from PIL import Image

from gluon_cifar.data import fastdata
from gluon_cifar.data import transforms as data_transforms
from gluon_cifar.errors import InputError

from conftest import refuse, save_as, tiny_images


def test_normalize_equals_the_chapters_test_transform():
    images = fastdata.decode_batch(tiny_images(1, 16))
    chapter = onp.stack([data_transforms.test_transform()(mx.np.array(img)).asnumpy() for img in images])
    onp.testing.assert_array_equal(fastdata.normalize(images).asnumpy(), chapter)


@pytest.mark.parametrize("fmt, split", [("TIFF", "train"), ("GIF", "test"), ("WEBP", "train")])
def test_an_image_mxnet_cannot_decode_is_refused_even_if_pil_can(capfd, root, fmt, split):
    rng = onp.random.default_rng(1)
    pixels = rng.random((32, 32)).astype(onp.float32) if fmt == "TIFF" else \
        rng.integers(0, 256, (32, 32, 3), dtype=onp.uint8)
    save_as(os.path.join(root, split, "1.png"), fmt, pixels)
    line = refuse(capfd, root)
    assert os.path.join(split, "1.png") in line and "MXNet" in line


@pytest.mark.parametrize("size", [(20000, 10000), (10000, 10000)])
def test_a_decompression_bomb_is_refused_before_decoding(capfd, root, size):
    Image.new("1", size).save(os.path.join(root, "test", "2.png"))  # a few kB on disk
    line = refuse(capfd, root)
    assert os.path.join("test", "2.png") in line and "image too large" in line


@pytest.mark.parametrize("name", ["².png", "١.png", "1.png.png", " 1.png"])
def test_only_ascii_digits_are_ids(capfd, root, name):
    os.rename(os.path.join(root, "test", "1.png"), os.path.join(root, "test", name))
    assert name in refuse(capfd, root)


@pytest.mark.parametrize("split, first, second", [("test", "1.png", "1.PNG"), ("test", "2.png", "002.png"),
                                                  ("train", "2.png", "002.png"), ("train", "3.png", "3.jpg")])
def test_two_files_of_one_id_are_ambiguous(capfd, root, split, first, second):
    shutil.copyfile(os.path.join(root, split, first), os.path.join(root, split, second))
    assert "ambiguous" in refuse(capfd, root)


def test_a_truncated_png_is_named_even_where_the_process_made_pil_lenient(tmp_path, monkeypatch):
    """PIL's LOAD_TRUNCATED_IMAGES is process-wide: importing GluonCV sets it, and so does a common fix
    for "image file is truncated" in a user's notebook. The package's check stays strict and leaves it as set."""
    from PIL import Image, ImageFile

    from gluon_cifar.images import image_size
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = tmp_path / "1.png"
    Image.fromarray(onp.zeros((32, 32, 3), onp.uint8) + 100).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(InputError, match="cannot decode image"):
        image_size(str(path))
    assert ImageFile.LOAD_TRUNCATED_IMAGES  # left as the process set it


def _chunk_end(data, kind):
    """The offset just past chunk `kind`'s data in PNG bytes `data` (where its CRC starts)."""
    pos = 8
    while data[pos + 4:pos + 8] != kind:
        pos += 12 + int.from_bytes(data[pos:pos + 4], "big")
    return pos + 8 + int.from_bytes(data[pos:pos + 4], "big")


def _flip(data, offset):
    return data[:offset] + bytes([data[offset] ^ 0x10]) + data[offset + 1:]


def _rewritten_idat(data, rows=lambda rows: rows, stream=lambda stream: stream):
    """PNG bytes `data` with their image data inflated, changed by `rows`, deflated, changed by `stream` and
    given a correct CRC: damage no CRC can see (a faulty encoder's)."""
    import zlib
    start = _chunk_end(data, b"IHDR") + 4
    body = b"IDAT" + stream(zlib.compress(rows(zlib.decompress(data[start + 8:_chunk_end(data, b"IDAT")]))))
    chunk = (len(body) - 4).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    return data[:start] + chunk + data[_chunk_end(data, b"IDAT") + 4:]


DAMAGE = {"zlib's checksum wrong, CRC right": lambda d: _rewritten_idat(d, stream=lambda z: _flip(z, len(z) - 1)),
          "a row's filter type invalid, CRC right": lambda d: _rewritten_idat(d, rows=lambda r: b"\x07" + r[1:]),
          "cut after the header": lambda d: d[:30], "cut in half": lambda d: d[:len(d) // 2],
          "cut before IEND": lambda d: d[:-12], "cut inside IDAT's CRC": lambda d: d[:_chunk_end(d, b"IDAT") + 2],
          "IDAT's CRC wrong": lambda d: _flip(d, _chunk_end(d, b"IDAT")),
          "IDAT's data damaged": lambda d: _flip(d, _chunk_end(d, b"IDAT") - 40),
          "IHDR's height damaged": lambda d: _flip(d, 22)}


@pytest.mark.parametrize("damage", DAMAGE)
def test_the_one_decode_check_of_a_kaggle_png_passes_only_what_training_reads(tmp_path, damage):
    """The reorganisation's quick proof of a Kaggle image (`is_complete_kaggle_png`) passes the real image and
    no damaged copy of it; each damaged copy is then refused by the full check (`read_original`), which is
    what the reorganisation falls back to, so a damaged image is still named."""
    from gluon_cifar.images import is_complete_kaggle_png, read_original
    intact = tiny_images(1, 1)[0]
    with open(intact, "rb") as f:
        data = f.read()
    assert is_complete_kaggle_png(data) and read_original(intact).shape == (32, 32, 3)
    path = tmp_path / "1.png"
    path.write_bytes(DAMAGE[damage](data))
    assert not is_complete_kaggle_png(path.read_bytes())
    with pytest.raises(InputError, match="cannot decode image"):
        read_original(str(path))
