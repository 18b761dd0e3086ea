"""Creating, renaming and removing files and folders, by the manifest's rules.

One staging convention: what is being written is named `.<name>.<pid>.<8 random characters>.tmp` beside
its final place `<name>`, with the writer's process id. A staging entry left by a killed writer is
removed only when that writer no longer runs and the entry is recorded: a staging file in its folder's
manifest, a staging folder by the manifest inside it (which names the folder itself); its contents by
the same rules as any removal. Removal checks everything first, then removes: one file or folder that
is not the package's (not in the manifest, or changed since) stops it with one line naming it.
"""
import logging
import os
import re
import shutil
import stat
import tempfile

from gluon_cifar.errors import InputError
from gluon_cifar.fs.manifest import MANIFEST, Manifest, identity, matches

OWNER_MARKER = ".gluon_cifar"  # written first into every folder the package builds from nothing
RUN_MARKER = ".gluon_cifar-run"  # an output folder's: the outputs its run has finished (gluon_cifar.checkpoint)
log = logging.getLogger("gluon_cifar")


def process_running(pid):
    """Whether process `pid` exists (a zombie counts: its parent has not collected it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def staging_prefix(path):
    """The start of the staging names of `path`: `.<name>.<pid>.`."""
    return f".{os.path.basename(os.path.abspath(path))}.{os.getpid()}."


def staging_writer(entry, name=None):
    """The process id in `entry`, a file name, if it is a staging name (of `name`, or of any name), else None."""
    prefix = re.escape(f".{name}.") if name else r"\..+\."
    match = re.fullmatch(prefix + r"([1-9]\d*)\.[a-z0-9_]{8}\.tmp", entry, re.DOTALL)
    return int(match.group(1)) if match else None


def _stale(folder, name=None):
    """The staging entries in `folder` (of `name`, or of any name) whose writers no longer run."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return [entry.path for entry in entries if (pid := staging_writer(entry.name, name))
            and pid != os.getpid() and not process_running(pid)]


def clean_stale_staging(folder, name=None, manifest=None):
    """Remove what killed writes (of `name`, or of any output) left in `folder` (see the module's rules);
    what cannot be proven the package's is left where it is, said in one line."""
    manifest = manifest or Manifest(folder)
    entries = None
    for stale in _stale(folder, name):
        if os.path.isdir(stale) and not os.path.islink(stale):
            inner = Manifest(stale)
            if inner.owns(stale):
                try:
                    remove_owned([stale], inner, "cleaning up what a killed run left")
                except InputError as err:
                    log.warning("%s; it is left where it is", err)
            continue
        entries = manifest.entries() if entries is None else entries
        if entries.get(manifest.rel(stale), {}).get("kind") == "staging" and manifest.owns(stale, entries):
            os.remove(stale)
            manifest.forget(stale)


def forget_staging(tmp, manifest):
    """Remove a staging file of this process's if it is still there (a failed write); forget its name."""
    if os.path.lexists(tmp):
        os.remove(tmp)
    manifest.forget(tmp)


def staging_dir(path, marker=True):
    """A new staging folder beside `path` (after cleaning killed writers' ones), with the owner marker
    unless not `marker`: fill it, then rename it into place. Its manifest, inside it, names it."""
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    clean_stale_staging(parent, name)
    folder = tempfile.mkdtemp(dir=parent, prefix=staging_prefix(path),
                              suffix=".tmp")
    manifest = Manifest(folder)
    manifest.record(folder, "root")
    if marker:
        from gluon_cifar.fs.atomic import write_json  # (atomic uses this module)
        write_json(os.path.join(folder, OWNER_MARKER), {"made_by": "gluon_cifar"}, manifest)
    return folder


def is_marked(folder):
    """Whether `folder` carries the package's owner marker."""
    return os.path.isfile(os.path.join(folder, OWNER_MARKER))


def make_dirs(path, manifest):
    """`os.makedirs(path)` under `manifest.root`, recording every folder it creates."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        os.mkdir(folder)
        manifest.record(folder, "dir")


def link_files(pairs, manifest):
    """Hard-link each (source, new name) of `pairs` (copy where links are impossible, e.g. across file
    systems). Every new name is recorded first, in one write, with the identity the link will have (its
    source's inode): a writer killed midway leaves only files the manifest lists."""
    try:
        manifest.record_many((dst, identity(src, "link")) for src, dst in pairs)
    except OSError as err:
        raise InputError(f"cannot write {manifest.path}: {err.strerror or err} (disk full?)") from None
    for src, dst in pairs:
        try:
            os.link(src, dst)
        except FileExistsError:  # not a new name: what is there is not ours
            manifest.forget(dst)
            raise
        except OSError:
            try:
                shutil.copyfile(src, dst)
            except OSError as err:
                if os.path.lexists(dst):  # the part this copy wrote into its new place
                    os.remove(dst)
                raise InputError(f"cannot write {dst}: {err.strerror or err} (disk full? links to the data are "
                                 "impossible there, so the images are copied)") from None
            manifest.record(dst, "file")


def record_tree(folder, manifest):
    """Record every file and folder under `folder` (written by a library into a staging folder: an unpack)."""
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            if name != MANIFEST:
                manifest.record(os.path.join(root, name))


def _stranger(path, purpose):
    what = "folder" if os.path.isdir(path) and not os.path.islink(path) else "file"
    return InputError(f"{path}: gluon_cifar did not write this {what} (or it changed since), and it is in the "
                      f"way ({purpose}): move it away and run again")


def _plan(path, manifest, entries, purpose, order, note=None):
    """Append `path` and everything under it to `order` (children first), or raise for a stranger."""
    rel = manifest.rel(path)
    if rel == MANIFEST:  # its own, removed after the files it lists
        order.append(path)
        return
    if rel != "." and not (rel in entries and matches(entries[rel], path)
                           and (note is None or entries[rel].get("note") == note)):
        raise _stranger(path, purpose)
    if stat.S_ISDIR(os.lstat(path).st_mode):
        for child in sorted(os.scandir(path), key=lambda e: e.name == MANIFEST):
            _plan(child.path, manifest, entries, purpose, order, note)
    order.append(path)


def check_owned(paths, manifest, purpose, note=None):
    """Raise InputError naming the first file or folder in or under `paths` (those that exist) that the
    manifest does not list with its identity (and `note`); return what removing `paths` removes, children
    first. `purpose` says in the message why it is in the way."""
    present = [os.path.abspath(path) for path in paths if os.path.lexists(path)]
    entries, order = manifest.entries() if present else {}, []  # (a reorganisation's manifest lists 60,000 files)
    for path in present:
        _plan(path, manifest, entries, purpose, order, note)
    return order


def remove_owned(paths, manifest, purpose):
    """Remove `paths` (files or folders under manifest.root) after `check_owned`: all or, when a stranger
    is in the way, nothing."""
    order = check_owned(paths, manifest, purpose)
    for path in order:
        if os.path.isdir(path) and not os.path.islink(path):
            try:
                os.rmdir(path)
            except OSError:  # something appeared since the check
                raise _stranger(next(os.scandir(path)).path, purpose) from None
        else:
            os.remove(path)
    if os.path.isdir(manifest.root):
        manifest.forget(*[path for path in order if path != manifest.path])


def rename_into_place(src, dst):
    """Rename `src` (a complete staging file or folder) to `dst`, which must not exist or be an empty folder."""
    if os.path.isdir(dst) and not os.path.islink(dst):
        os.rmdir(dst)  # fails unless empty: an empty folder the user made for us
    os.rename(src, dst)


def replace_folder(staging, target, purpose):
    """Put the complete staging folder `staging` (from `staging_dir`) in place of `target`: an empty folder,
    or one whose every file the package wrote (checked before anything changes), which is then removed."""
    manifest = Manifest(target)
    if os.path.isdir(target) and os.listdir(target):
        check_owned([target], manifest, purpose)
        retired = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(target)), prefix=staging_prefix(target),
                                   suffix=".tmp")
        os.rename(target, retired)  # over the empty folder; its manifest moves with it and still names it
        os.rename(staging, target)
        remove_owned([retired], Manifest(retired), purpose)
    else:
        rename_into_place(staging, target)
