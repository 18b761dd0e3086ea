"""The package's file-system layer: the only code that creates by rename, renames, replaces, locks or
removes files and folders (tests/unit/test_fs.py checks it). The rest of the package calls it.

- atomic: outputs written under a staging name and renamed into place, recorded in the folder's manifest;
- manifest: what the package wrote in a folder, with each file's identity;
- tree: staging folders, links, removal of only what the manifest lists (all checked first);
- locks: flock-based locks, waiting or refusing when busy.
"""
from gluon_cifar.fs.atomic import atomic_path, check_not_an_input, publish, read_json, write_error, write_json
from gluon_cifar.fs.locks import FileLock, locked
from gluon_cifar.fs.manifest import MANIFEST, Manifest
from gluon_cifar.fs.tree import (OWNER_MARKER, RUN_MARKER, check_owned, clean_stale_staging, is_marked, link_files,
                                 make_dirs, process_running, record_tree, remove_owned, rename_into_place,
                                 replace_folder, staging_dir, staging_writer)

__all__ = ["atomic_path", "check_not_an_input", "publish", "read_json", "write_error", "write_json", "FileLock", "locked",
           "MANIFEST", "Manifest", "OWNER_MARKER", "RUN_MARKER", "check_owned", "clean_stale_staging", "is_marked",
           "link_files", "make_dirs", "process_running", "record_tree", "remove_owned", "rename_into_place",
           "replace_folder", "staging_dir", "staging_writer"]
