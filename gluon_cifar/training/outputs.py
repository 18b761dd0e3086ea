"""A run's output folder: claimed by the package's marker, locked while in use, and its policy
(`--resume` continues the run there, `--overwrite` replaces what the run wrote, anything else is
refused); `config.json`, the run's settings and data fingerprint, checked on `--resume`.
"""
import contextlib
import json
import logging
import os
import tempfile

from gluon_cifar import fs
from gluon_cifar.errors import InputError, reason
from gluon_cifar.fs import RUN_MARKER, read_json, write_json
from gluon_cifar.settings import resume_conflict, saved_settings_problem
from gluon_cifar.training.checkpoint import (BEST_DIRNAME, CHECKPOINT_DIRNAME, EPOCH_DIR, check_resumable,
                                             latest_checkpoint, read_history, remove_epochs)

log = logging.getLogger("gluon_cifar")


CONFIG_FILENAME = "config.json"


# what a finished run leaves in its folder, beside config.json and checkpoint/
OUTPUT_FILES = ("metrics.csv", "metrics.json", "curves.png", "model-symbol.json", "model-0000.params",
                "model-classes.json", "submission.csv")
# and, with a validation split (not --final), what the model gets wrong on it (gluon_cifar.deploy.interpret)
VALIDATION_OUTPUTS = ("confusion.png", "per_class.csv", "top_losses.png")


LOCK_FILE = RUN_MARKER + ".lock"


class OutputDir:
    """A run's output folder, claimed by the package's marker; see `use_output_dir`."""

    def __init__(self, path):
        self.path = path
        self.checkpoints = os.path.join(path, CHECKPOINT_DIRNAME)
        self.marker = os.path.join(path, RUN_MARKER)

    def written(self):
        """The outputs (OUTPUT_FILES, VALIDATION_OUTPUTS) the run has finished writing, as the marker lists them."""
        listed = (read_json(self.marker) or {}).get("written", [])
        return [name for name in OUTPUT_FILES + VALIDATION_OUTPUTS
                if name in listed and os.path.isfile(os.path.join(self.path, name))]

    def set_written(self, names):
        """Record that the run has finished writing `names` (and no other output)."""
        write_json(self.marker, {"package": "gluon_cifar", "written": list(names)})

    def remove(self, names, purpose):
        """Remove the outputs `names` that an earlier run left here (only as the package wrote them)."""
        fs.remove_owned([os.path.join(self.path, name) for name in names], fs.Manifest(self.path), purpose)

    def finished(self, epochs, validation):
        """Whether every epoch up to `epochs` is checkpointed and every output written (with `validation`,
        VALIDATION_OUTPUTS too)."""
        path = latest_checkpoint(self.checkpoints)
        expected = OUTPUT_FILES + (VALIDATION_OUTPUTS if validation else ())
        return path is not None and len(read_history(path)) >= epochs and set(expected) <= set(self.written())


@contextlib.contextmanager
def use_output_dir(out, resume=False, overwrite=False):
    """Claim and lock the output folder `out` for one run; yield its OutputDir.

    The policy: a folder the package did not make (no marker) is used only when empty. A folder holding a
    previous run is refused, so two runs never mix, unless `resume` (continue the run whose checkpoint is
    there) or `overwrite` (start afresh: the old checkpoint is removed now, the old outputs are replaced as
    the new run writes them). Another run using `out` now holds its lock: refused. Staging files that killed
    writes left are removed.
    """
    _make_writable_folder(out)
    _refuse_foreign(out, claim_in_flight=True)
    with fs.locked(os.path.join(out, LOCK_FILE), busy=f"{out} is in use by another run: wait for it to finish, "
                                                     "or choose another --output-dir",
                   cannot=f"cannot lock {out} for this run"):
        _refuse_foreign(out)  # again, now that no other run can change it
        output = OutputDir(out)
        _apply_policy(output, resume, overwrite)
        yield output


def _make_writable_folder(out):
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass  # a write probe: no permission, a read-only mount, ... fail here, not after training
    except OSError as err:
        raise InputError(f"cannot write to {out}: {err.strerror or err}") from None


def _refuse_foreign(out, claim_in_flight=False):
    """Refuse a folder that holds anything but does not carry the package's marker. With `claim_in_flight`
    (before the lock), what a run claiming the folder now writes first (the manifest, the marker's staging
    file) is not foreign: that run holds the lock, and taking it says so."""
    entries = sorted(set(os.listdir(out)) - {LOCK_FILE})
    if claim_in_flight:
        entries = [name for name in entries if name != fs.MANIFEST and fs.staging_writer(name, RUN_MARKER) is None]
    if entries and RUN_MARKER not in entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise InputError(f"{out} holds files that are not a gluon_cifar run ({shown}): choose an empty or new "
                         "--output-dir")


def _apply_policy(output, resume, overwrite):
    if os.path.lexists(output.checkpoints) and (os.path.islink(output.checkpoints)
                                                or not os.path.isdir(output.checkpoints)):
        raise InputError(f"{output.checkpoints} is not the folder a run makes (a link or a file): move it")
    has_checkpoint = latest_checkpoint(output.checkpoints) is not None
    if resume and not has_checkpoint:
        raise InputError(f"--resume: {output.checkpoints} holds no checkpoint to resume from")
    # a run that stopped before its first checkpoint leaves only its settings: that does not count
    previous = [name for name in OUTPUT_FILES + VALIDATION_OUTPUTS if os.path.lexists(os.path.join(output.path, name))]
    if (has_checkpoint or previous) and not (resume or overwrite):
        shown = ", ".join(([CHECKPOINT_DIRNAME] if has_checkpoint else []) + previous[:3])
        raise InputError(f"{output.path} already holds a run ({shown}): pass --resume to continue it, "
                         "--overwrite to replace it, or another --output-dir")
    # What this run replaces or removes must be what runs wrote: checked now, before anything changes.
    purpose = "--overwrite replaces it" if overwrite else "--resume replaces it"
    checkpoints = os.listdir(output.checkpoints) if os.path.isdir(output.checkpoints) else []
    epochs = [os.path.join(output.checkpoints, name) for name in sorted(checkpoints) if EPOCH_DIR.fullmatch(name)]
    best = os.path.join(output.checkpoints, BEST_DIRNAME)
    # (config.json on resume: checked, then kept)
    replaced = OUTPUT_FILES + VALIDATION_OUTPUTS + (RUN_MARKER,) + (() if resume else (CONFIG_FILENAME,))
    fs.check_owned([os.path.join(output.path, name) for name in replaced], fs.Manifest(output.path), purpose)
    fs.check_owned([best], fs.Manifest(output.checkpoints), purpose)
    if overwrite:
        remove_epochs(epochs, purpose)
        fs.remove_owned([best], fs.Manifest(output.checkpoints), purpose)
    fs.clean_stale_staging(output.path)
    fs.clean_stale_staging(output.checkpoints)
    if not resume:  # the outputs there (an --overwrite'n run's) are not this run's
        output.set_written([])


def read_saved_config(out):
    """The settings dict of the run in `out` (its config.json), for --resume to compare; refused with one line
    when missing, not JSON, or not settings (another JSON type, a field of the wrong type)."""
    path = os.path.join(out, CONFIG_FILENAME)
    try:
        with open(path) as f:
            saved = json.load(f)
    except OSError as err:
        saved, problem = None, f"cannot be read ({err.strerror})"
    except ValueError as err:
        saved, problem = None, f"not valid JSON ({reason(err)})"
    else:
        problem = saved_settings_problem(saved)
    if problem:
        raise InputError(f"{path}: {problem}: --resume cannot check that the settings are the run's; "
                         "--overwrite starts the run afresh")
    return saved


def record_config(output, config, data):
    """Save the run's settings (a RunConfig) and the fingerprint of its `data` (data.fingerprint.data_fingerprint) as
    `config.json` in `output` (an OutputDir) as it starts.

    On resume, refuse settings that differ from the saved ones (see config.RESUMABLE for those that may
    change) and fewer epochs than the checkpoint holds, before the file is touched: it never disagrees with
    the checkpoint. Other test images than the run predicted mark submission.csv to be written again.
    """
    path = os.path.join(output.path, CONFIG_FILENAME)
    if config.resume:
        saved = read_saved_config(output.path)
        conflict = resume_conflict(config, saved)
        if conflict:
            raise InputError(f"--resume continues the run as it was started, but {conflict} (see {path})")
        check_resumable(output.checkpoints, config.epochs)
        written, recorded = output.written(), saved.get("data")
        if isinstance(recorded, dict) and recorded.get("test") != data["test"] and "submission.csv" in written:
            log.info("the test images are not those of %s: predicting them again",
                     os.path.join(output.path, "submission.csv"))
            output.set_written([name for name in written if name != "submission.csv"])
        if saved.get("epochs") == config.epochs and saved.get("data") == data:
            return  # the run's settings stand (a finished run resumed changes no file)
    write_json(path, {**config.to_dict(), "data": data})
