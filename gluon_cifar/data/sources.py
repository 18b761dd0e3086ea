"""Where a data folder comes from: Kaggle's train.7z/test.7z unpacked beside the CSVs, d2l's demo set
(downloaded, SHA-1 checked) or the sample bundled with the package, each unpacked into a staging folder
and renamed into place."""
import contextlib
import hashlib
import logging
import os
import unicodedata
import urllib.parse
import zipfile

from gluon_cifar import fs
from gluon_cifar.errors import InputError, shorten
from gluon_cifar.fs import read_json, write_json
from gluon_cifar.settings import DEFAULT_CACHE_DIR

log = logging.getLogger("gluon_cifar")


@contextlib.contextmanager
def unpacking_folder(folder):
    """A new staging folder beside `folder` (gluon_cifar.fs: marked, named with this process's id) to unpack
    into, then rename the result to `folder`. The staging folder is removed when the block ends."""
    staging = fs.staging_dir(folder)
    try:
        yield staging
    finally:
        manifest = fs.Manifest(staging)
        fs.record_tree(staging, manifest)  # what this process unpacked into its new folder, and did not move out
        fs.remove_owned([staging], manifest, "the staging folder of an unpack")


def unpack_archives(data_dir):
    """Unpack Kaggle's `train.7z`/`test.7z` beside the CSVs when their folders are missing."""
    for split in ("train", "test"):
        folder, archive = os.path.join(data_dir, split), os.path.join(data_dir, f"{split}.7z")
        if os.path.isdir(folder) or not os.path.isfile(archive):
            continue
        import py7zr  # only needed for the competition download
        log.info("unpacking %s (%.0f MB, once; the two archives of 60,000 images took 55 s on 2 cores)", archive,
                 os.path.getsize(archive) / 1e6)
        with unpacking_folder(folder) as staging:
            try:
                with py7zr.SevenZipFile(archive) as z:
                    z.extractall(staging)
            except (py7zr.exceptions.Bad7zFile, OSError) as err:
                raise InputError(f"{archive}: cannot unpack ({err})") from None
            fs.rename_into_place(os.path.join(staging, split), folder)  # the user's data from now on


DEMO_URL_VARIABLE = "GLUON_CIFAR_DEMO_URL"  # a mirror of d2l's kaggle_cifar10_tiny.zip (same SHA-1)


BUNDLED_SAMPLE = os.path.join(os.path.dirname(__file__), "demo_sample.zip")


_SAMPLE_STAMP = ".bundled_sample.json"


class DownloadError(InputError):
    """The demo set could not be fetched: offline, a proxy in the way, or a mirror serving another file."""


def mirror_url(environ=os.environ):
    """The demo set's URL from GLUON_CIFAR_DEMO_URL, or None where it is unset or empty; refused unless it is an
    http(s) URL of a file (d2l names the download after its last part)."""
    url = environ.get(DEMO_URL_VARIABLE)
    if not url:  # empty is unset, as before
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        parts = None
    if (not parts or parts.scheme not in ("http", "https") or not parts.hostname or not parts.path.rsplit("/", 1)[-1]
            or any(c.isspace() or unicodedata.category(c) == "Cc" for c in url)):
        raise InputError(f"{DEMO_URL_VARIABLE} must be the http(s) URL of a mirror's kaggle_cifar10_tiny.zip, "
                         f"got {shorten(repr(url), 80)}: fix or unset it")
    return url


def demo_dir(cache_dir=DEFAULT_CACHE_DIR):
    """Where `download_demo` puts the demo set."""
    return os.path.join(os.path.expanduser(cache_dir), "kaggle_cifar10_tiny")


def download_demo(cache_dir=DEFAULT_CACHE_DIR):
    """Fetch d2l's `cifar10_tiny` demo set (SHA-1 checked) into `cache_dir`; return its folder.

    The URL is d2l's, or the one in the GLUON_CIFAR_DEMO_URL environment variable.
    """
    import requests
    from d2l import mxnet as d2l  # heavy (matplotlib, IPython): imported only for the demo
    url, sha1 = d2l.DATA_HUB["cifar10_tiny"]
    url = mirror_url() or url
    cache_dir = os.path.expanduser(cache_dir)
    folder = demo_dir(cache_dir)
    if os.path.isfile(os.path.join(folder, "trainLabels.csv")):
        return folder
    try:
        zip_path = d2l.download(url, cache_dir, sha1)
    except requests.RequestException as err:
        raise DownloadError(f"cannot download the demo set from {url} ({type(err).__name__})") from None
    except OSError as err:  # after RequestException, which is one
        raise InputError(f"cannot write the demo set into {cache_dir}: {err.strerror or err}") from None
    with open(zip_path, "rb") as f:
        if hashlib.sha1(f.read()).hexdigest() != sha1:
            cache = fs.Manifest(cache_dir)  # d2l.download has just written it: a cached file of this SHA-1 is kept
            cache.record(zip_path)
            fs.remove_owned([zip_path], cache, "a download with the wrong SHA-1")
            raise DownloadError(f"the demo set downloaded from {url} has the wrong SHA-1 (removed)")
    with unpacking_folder(folder) as staging, zipfile.ZipFile(zip_path) as z:
        z.extractall(staging)
        fs.rename_into_place(os.path.join(staging, "kaggle_cifar10_tiny"), folder)
    return folder


def bundled_sample(cache_dir=DEFAULT_CACHE_DIR):
    """Unpack the sample shipped in the package into `cache_dir/demo_sample`; return that folder.

    The sample is 40 training images of each class and the 5 test images of d2l's `cifar10_tiny`,
    Kaggle layout. Training writes inside its data folder, and the package's own folder may be
    read-only, hence the copy. It is unpacked beside its place and renamed into it once complete;
    a complete unpack of the same archive is reused, one of an older archive replaced.
    """
    with open(BUNDLED_SAMPLE, "rb") as f:
        stamp = {"sha1": hashlib.sha1(f.read()).hexdigest()}
    folder = os.path.join(os.path.expanduser(cache_dir), "demo_sample")
    found = read_json(os.path.join(folder, _SAMPLE_STAMP))
    if found == stamp:
        return folder
    if os.path.exists(folder) and found is None:
        raise InputError(f"{folder}: exists but is not the bundled sample this package unpacked; "
                         "move it away or choose another --cache-dir")
    try:
        staging = fs.staging_dir(folder)
        try:
            with zipfile.ZipFile(BUNDLED_SAMPLE) as z:
                z.extractall(staging)
            fs.record_tree(staging, fs.Manifest(staging))
            write_json(os.path.join(staging, _SAMPLE_STAMP), stamp, fs.Manifest(staging))
        except BaseException:
            fs.remove_owned([staging], fs.Manifest(staging), "the staging folder of an unpack")
            raise
        fs.replace_folder(staging, folder, "an older sample is replaced")  # only the files an unpack wrote
    except OSError as err:
        raise InputError(f"cannot unpack the bundled sample into {folder}: {err.strerror or err}") from None
    return folder


def demo_data_dir(cache_dir=DEFAULT_CACHE_DIR, source="auto"):
    """The Kaggle-layout folder to use when no data folder was given.

    source: "download" is the chapter's demo set (cached, else downloaded) or an error; "bundled" is
    the small sample shipped in the package; "auto" is the demo set, or the sample when the download
    fails, saying so in one warning line. Messages name a data folder the way the command was run:
    `make demo` sets GLUON_CIFAR_VIA_MAKE, and make takes DATA_DIR=, not flags.
    """
    if source == "bundled":
        return bundled_sample(cache_dir)
    via_make = bool(os.environ.get("GLUON_CIFAR_VIA_MAKE"))
    own_data = "make demo DATA_DIR=/path" if via_make else "--data-dir /path"
    try:
        return download_demo(cache_dir)
    except DownloadError as err:
        if source == "download":
            bundled = "" if via_make else " or use the bundled sample (--demo-source bundled)"
            raise InputError(f"{err}; offline? name a Kaggle-layout folder ({own_data}){bundled}") from None
        logging.getLogger("gluon_cifar").warning(
            f"{err}: training on the small sample bundled with the package instead (your own data: {own_data})")
    return bundled_sample(cache_dir)
