"""One home for what an image is: the CIFAR-10 constants, decoding and normalising.

Training (`data`, `fastdata`) and inference (`predict`, `fastinfer`, `export`) all read images through
these functions, so both sides see the same pixels.
"""
import os
import queue
import re
import threading
import warnings
import zlib

import cv2
import mxnet as mx
import numpy as onp
from mxnet import image, npx
from mxnet.base import MXNetError
from PIL import Image, ImageFile

from gluon_cifar.errors import InputError, shorten

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
IMAGE_SHAPE = (32, 32, 3)  # one image as decoded: height, width, RGB
INPUT_SHAPE = (3, 32, 32)  # one image as the network takes it (NCHW without the batch axis)


def image_size(path):
    """(width, height) of the image in `path`, after decoding all of it (a truncated file fails here).

    Images over PIL's limit (`Image.MAX_IMAGE_PIXELS`, about 89 million pixels) are refused before
    decoding, so a small file that expands to gigabytes cannot exhaust memory.
    """
    # PIL's leniency is process-wide: GluonCV's import turns it on, as does the usual notebook fix for "image
    # file is truncated". Strict for this check, then restored.
    lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path}: image too large (over {Image.MAX_IMAGE_PIXELS:,} pixels)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{path}: cannot decode image ({err})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def read_original(path):
    """Decode an image at its own size as RGB, with MXNet's decoder (the one `ImageFolderDataset` uses).

    PIL checks the whole file first (it reports truncation quietly); MXNet then proves it can read it:
    a float TIFF, a GIF or a WebP named `.png` passes PIL but not MXNet.
    """
    image_size(path)
    try:
        img = image.imread(path, flag=1)
        img.wait_to_read()  # MXNet's engine reports a failed decode only when the result is used
    except MXNetError:
        raise InputError(f"{path}: cannot decode image with MXNet (a format or depth it cannot read)") from None
    return img


# How every Kaggle image begins: the PNG signature and the header chunk (IHDR) of a 32x32 image, 8 bits per
# channel, RGB, not interlaced, with its CRC; and how it ends: the empty IEND chunk. Between them, IDAT chunks.
_KAGGLE_IHDR = b"IHDR" + (32).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
KAGGLE_PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\r" + _KAGGLE_IHDR + zlib.crc32(_KAGGLE_IHDR).to_bytes(4, "big")
PNG_END = b"\x00\x00\x00\x00IEND" + zlib.crc32(b"IEND").to_bytes(4, "big")
KAGGLE_ROW = 1 + 32 * 3  # a row of image data: its filter type byte, then 32 RGB pixels


def is_complete_kaggle_png(data):
    """Whether PNG bytes `data` are a whole 32x32 8-bit RGB image that libpng (MXNet's and OpenCV's PNG
    decoder) reads: `read_original`'s proof, one decompression.

    Kaggle's header, IDAT chunks whose CRCs match, the end chunk at the end (no cut, no damaged byte), and
    image data that inflates (zlib's own check included) to exactly 32 rows, each with a valid filter
    type: all libpng needs of such a file. The header fixes the size, so no decompression bomb. Anything
    else (other sizes, modes, formats, other chunks) is left to `read_original`, which names what is wrong.
    """
    if not (data.startswith(KAGGLE_PNG_HEAD) and data.endswith(PNG_END)):
        return False
    pos, body, image_data = len(KAGGLE_PNG_HEAD), len(data) - len(PNG_END), []
    while pos < body:
        end = pos + 8 + int.from_bytes(data[pos:pos + 4], "big")
        if (data[pos + 4:pos + 8] != b"IDAT" or end + 4 > body
                or zlib.crc32(data[pos + 4:end]) != int.from_bytes(data[end:end + 4], "big")):
            return False
        image_data.append(data[pos + 8:end])
        pos = end + 4
    inflate = zlib.decompressobj()
    try:
        rows = inflate.decompress(b"".join(image_data), 32 * KAGGLE_ROW + 1)
    except zlib.error:
        return False
    return (inflate.eof and not inflate.unused_data and len(rows) == 32 * KAGGLE_ROW
            and max(rows[::KAGGLE_ROW]) <= 4)


def read_image(path):
    """Decode an image as 32x32 RGB (grayscale, RGBA and palette PNGs are converted, other sizes resized)."""
    img = read_original(path)
    if img.shape[:2] != IMAGE_SHAPE[:2]:
        img = image.imresize(img, *IMAGE_SHAPE[:2])
    return img


def decode(path):
    """`read_image` for the common case (a 32x32 colour PNG) through OpenCV directly; the rest via `read_image`."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None or img.shape != IMAGE_SHAPE:
        return read_image(path).asnumpy()
    return img[:, :, ::-1]


def decode_batch(paths):
    """Decode `paths` into one uint8 (len(paths), 32, 32, 3) array."""
    batch = onp.empty((len(paths),) + IMAGE_SHAPE, onp.uint8)
    for i, path in enumerate(paths):
        batch[i] = decode(path)
    return batch


def normalize(images, ctx=None):
    """The chapter's ToTensor + Normalize, as MXNet's own operators on a whole uint8 NHWC batch at once.

    Returns a float32 NCHW `mx.np` array on `ctx`, equal to the chapter's per-image result.
    """
    batch = mx.np.array(images, dtype=onp.uint8, ctx=ctx)
    return npx.image.normalize(npx.image.to_tensor(batch), CIFAR10_MEAN, CIFAR10_STD)


def prefetch(iterable, depth=2):
    """Iterate `iterable` (say, batches being decoded) in a background thread, `depth` items ahead.

    OpenCV and NumPy release the GIL, so decoding overlaps MXNet's compute. An exception in the
    thread is re-raised here, at the item where it happened.
    """
    items = queue.Queue(maxsize=depth)
    done = object()

    def work():
        try:
            for item in iterable:
                items.put((item, None))
        except Exception as err:  # handed over to the consumer, which re-raises it
            items.put((None, err))
        items.put((done, None))

    threading.Thread(target=work, daemon=True).start()
    while True:
        item, err = items.get()
        if err is not None:
            raise err
        if item is done:
            return
        yield item


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


IMAGE_ID = re.compile(r"[0-9]+")  # ASCII digits: '²' and Arabic-Indic digits are not ids


MAX_IMAGE_ID = 2 ** 63 - 1  # ids travel through MXNet's int64 batches (a larger one breaks the batch)


def list_images(folder):
    """Return [(id, path)] for the `<id>.png` files in `folder`, in numeric id order.

    Ids are ASCII digits only, at most MAX_IMAGE_ID (int64). Hidden files are ignored; any other file, and
    two files of one id (`1.png` and `1.PNG`, `2.png` and `002.png`), are an error, so nothing is silently
    trained on or predicted twice.
    """
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: {'not a folder' if os.path.exists(folder) else 'folder not found'}")
    images = []
    with os.scandir(folder) as entries:  # the listing's file types: no stat per file (60,000 files: 0.1 s)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() not in IMAGE_EXTENSIONS or not IMAGE_ID.fullmatch(stem):
                raise InputError(f"{entry.path}: not an image named <id>.png (ids are ASCII digits)")
            if int(stem) > MAX_IMAGE_ID:
                raise InputError(f"{entry.path}: image id {shorten(stem, 40)} is larger than {MAX_IMAGE_ID}, "
                                 "the largest id the package handles; renumber the images")
            if not _is_file(entry):
                what = "a broken symbolic link" if entry.is_symlink() else "not a regular file"
                raise InputError(f"{entry.path}: {what}")
            images.append((int(stem), entry.path))
    images.sort()
    for (id_a, path_a), (id_b, path_b) in zip(images, images[1:]):
        if id_a == id_b:
            raise InputError(f"{path_a} and {os.path.basename(path_b)} are both image {id_a}: ambiguous, "
                             "keep one")
    return images


def _is_file(entry):
    """Whether a directory entry is a regular file or a link to one (a link loop is not)."""
    try:
        return entry.is_file()
    except OSError:
        return False
