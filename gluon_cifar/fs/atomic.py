"""Write every output under a staging name and rename it into place, so no reader sees half a file, and
record it in its folder's manifest; replace only what the package wrote there."""
import contextlib
import json
import os
import tempfile

from mxnet.base import MXNetError

from gluon_cifar.errors import InputError, reason
from gluon_cifar.fs.manifest import Manifest, identity, matches
from gluon_cifar.fs.tree import check_owned, clean_stale_staging, forget_staging, staging_prefix


def write_error(path, err):
    """The InputError for a failed write of `path`; MXNet's own writers fail with an MXNetError."""
    if isinstance(err, MXNetError):
        return InputError(f"cannot write {path}: {reason(err).split(': ')[-1]} (disk full?)")  # 'FileStream.Write incomplete'

    return InputError(f"cannot write {path}: {err.strerror or err}")


def check_not_an_input(output, files=(), folders=()):
    """Refuse an `output` path that is one of a command's input `files` or lies inside an input folder."""
    target = os.path.realpath(output)
    for path in files:
        if target == os.path.realpath(path) or (os.path.exists(output) and os.path.exists(path)
                                                and os.path.samefile(output, path)):
            raise InputError(f"{output} is an input of this command ({path}): choose another output file")
    for folder in folders:
        inside = os.path.realpath(folder)
        if os.path.commonpath([target, inside]) == inside:
            raise InputError(f"{output} is inside the input folder {folder}: write it elsewhere")


def publish(src, dst, manifest, replace_any=False, note=None):
    """Rename the finished staging file `src` to `dst`, recorded first (with `note`, e.g. whose file it is) in
    `manifest`; an existing `dst` is replaced only as in `atomic_path`.

    The record, made before the rename, names both the file to come and the one it replaces ("was"): a
    process killed between the two leaves `dst` the package's either way.
    """
    if not replace_any:
        check_owned([dst], manifest, "replace it", note)
    written = {**identity(src), **({"note": note} if note else {})}  # a rename keeps size, content and mtime
    recorded = manifest.entries().get(manifest.rel(dst)) if os.path.lexists(dst) else None
    candidates = [{k: v for k, v in recorded.items() if k != "was"}, recorded.get("was")] if recorded else []
    replaced = next((entry for entry in candidates if entry and matches(entry, dst)), None)  # (one level only)
    manifest.record(dst, entry={**written, **({"was": replaced} if replaced else {})})
    os.replace(src, dst)


@contextlib.contextmanager
def atomic_path(path, manifest=None, replace_any=False, note=None):
    """Yield a staging path beside `path`; on success it replaces `path`, on failure it is removed.

    The file is recorded in `manifest` (default: that of `path`'s folder). An existing `path` is replaced
    only when that manifest lists it with its identity (and `note`), or with `replace_any` (a file the
    user named).
    A failed write (no permission, disk full) leaves any previous `path` untouched and is reported as an
    InputError naming `path`.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    manifest = manifest or Manifest(folder)
    if not replace_any:
        check_owned([path], manifest, "replace it", note)
    try:
        clean_stale_staging(folder, os.path.basename(path), manifest)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=staging_prefix(path), suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        manifest.record(tmp, "staging")
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp's 0600 would hide outputs from other users
        yield tmp
        publish(tmp, path, manifest, replace_any=True, note=note)
    except (OSError, MXNetError) as err:
        raise write_error(path, err) from None
    finally:
        forget_staging(tmp, manifest)


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path, obj, manifest=None, note=None):
    """Write `obj` as JSON to `path`, atomically (see atomic_path)."""
    with atomic_path(path, manifest, note=note) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1)


def read_json(path):
    """The JSON object in `path`, or None where it is missing or unreadable (as after an interrupted write)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
