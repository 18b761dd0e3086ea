"""The manifest: every file and folder the package wrote in a folder, each with its identity.

`<root>/.gluon_cifar-manifest` is append-only JSON lines, one `{"path": ..., "kind": ...}` per write (a
later line for the same path replaces an earlier one; `"kind": "gone"` forgets it), so recording costs one
small write and a killed writer loses at most the line of the file it was writing. A file is the
package's only while it still has the identity recorded when it was written:
- a file up to HASH_LIMIT bytes: its size and SHA-256 (content: survives copies and backups);
- a bigger file: its size and mtime (copies made with `cp -p`, `rsync -a` or `shutil.copytree` keep both);
- a hard link to a source image (the reorganisation): its inode, and its size and mtime unless the
  source still has another name (removing one name of a file with others loses nothing);
- a folder; a staging file (its inode and writer's pid); the manifest's own root folder (its inode);
- 'pending': a name in a staging folder that a library (MXNet's savers) is about to write, recorded before
  it writes, so that a writer killed mid-write leaves nothing the next command cannot clean.
"""
import contextlib
import errno
import hashlib
import json
import os
import stat

MANIFEST = ".gluon_cifar-manifest"
HASH_LIMIT = 8 << 20


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def identity(path, kind=None):
    """The manifest entry of what is at `path` now: kind 'dir', 'file', 'link' (a hard link to a source),
    'staging' (a file being written) or 'root' (the manifest's folder)."""
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode):
        kind = kind or "dir"
    entry = {"kind": kind or "file"}
    if entry["kind"] in ("link", "staging", "root"):
        entry.update(ino=info.st_ino, dev=info.st_dev)
    if entry["kind"] in ("link", "file"):
        entry.update(size=info.st_size, mtime_ns=info.st_mtime_ns)
    if entry["kind"] == "file" and info.st_size <= HASH_LIMIT:
        entry["sha256"] = _sha256(path)
    if entry["kind"] in ("staging", "root"):
        entry["pid"] = os.getpid()
    return entry


def matches(entry, path):
    """Whether what is at `path` is still the file or folder `entry` recorded (never through a symbolic link),
    or the one it was to replace (`publish`)."""
    if "was" in entry and matches(entry["was"], path):
        return True
    try:
        info = os.lstat(path)
    except OSError:
        return False
    kind = entry.get("kind")
    if kind in ("dir", "root"):
        same = stat.S_ISDIR(info.st_mode)
    else:
        same = stat.S_ISREG(info.st_mode)
    if kind == "link":  # the same link, or a copy of it that kept its size and time (cp -a, rsync -a, copytree)
        kept = (info.st_size, info.st_mtime_ns) == (entry["size"], entry["mtime_ns"])
        linked = (info.st_ino, info.st_dev) == (entry.get("ino"), entry.get("dev")) and info.st_nlink > 1
        return same and (kept or linked)
    if kind in ("staging", "root"):
        same = same and (info.st_ino, info.st_dev) == (entry.get("ino"), entry.get("dev"))
    if kind == "pending":  # named before a library wrote it, in a staging folder of the package's
        return same
    if kind == "file":
        if not same or info.st_size != entry.get("size"):
            return False
        if "sha256" in entry:
            return _sha256(path) == entry["sha256"]
        return info.st_mtime_ns == entry.get("mtime_ns")
    return same


class Manifest:
    """The manifest of folder `root`: record what the package writes under it, and tell what is its own."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.path = os.path.join(self.root, MANIFEST)
        self._fd = None

    def rel(self, path):
        """`path` relative to the root ('.' for the root itself)."""
        path = os.path.abspath(path)
        inside = self.root.rstrip(os.sep) + os.sep
        return path[len(inside):] if path.startswith(inside) else os.path.relpath(path, self.root)

    def entries(self):
        """{relative path: entry} of everything recorded and not forgotten."""
        found = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        path = entry.pop("path")
                    except (ValueError, KeyError, TypeError, AttributeError):
                        continue  # a line cut by a killed writer
                    if entry.get("kind") == "gone":
                        found.pop(path, None)
                    else:
                        found[path] = entry
        except (OSError, UnicodeDecodeError):
            pass
        return found

    def owns(self, path, entries=None):
        """Whether `path` is recorded and still has its recorded identity."""
        entry = (self.entries() if entries is None else entries).get(self.rel(path))
        return entry is not None and matches(entry, path)

    def _write(self, lines):
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        if self._fd is not None:
            os.write(self._fd, data)
            return
        try:
            fd, created = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            fd, created = os.open(self.path, os.O_WRONLY | os.O_APPEND), False
        try:
            if os.write(fd, data) != len(data):  # O_APPEND: writers of one folder never interleave within a line
                raise OSError(errno.EFBIG, "File too large")  # (a file size limit cut the write short)
        except OSError:
            if created:  # (a full disk): leave no empty manifest behind
                os.remove(self.path)
            raise
        finally:
            os.close(fd)

    def record(self, path, kind=None, entry=None):
        """Record what is at `path` now (or `entry`, an identity taken earlier) as written by the package."""
        self._write([{"path": self.rel(path), **(entry or identity(path, kind))}])

    def record_many(self, entries):
        """Record each (path, entry) of `entries` (identities taken earlier), in one write."""
        self._write([{"path": self.rel(path), **entry} for path, entry in entries])

    def expect(self, *paths):
        """Record `paths` as about to be written by a library into a staging folder (kind 'pending')."""
        self._write([{"path": self.rel(path), "kind": "pending"} for path in paths])

    def forget(self, *paths):
        """Record that `paths` are gone. Best effort (a full disk): a line missing here names a file that is
        no longer there, which nothing can mistake for its own."""
        if paths:
            with contextlib.suppress(OSError):
                self._write([{"path": self.rel(path), "kind": "gone"} for path in paths])

    def __enter__(self):
        """Keep the manifest open for many records (a reorganisation's 60,000 links)."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        return self

    def __exit__(self, *exc):
        os.close(self._fd)
        self._fd = None
