"""A training run's settings: one frozen, typed object, built once from the command line, checked once,
saved beside the outputs as `config.json` and compared field by field on `--resume`.

The defaults are the source chapter's (d2l, "Image Classification (CIFAR-10) on Kaggle", MXNet tab):
lr 0.1, wd 5e-4, lr x0.1 every 50 epochs, 5 epochs, valid ratio 0.1, batch 4 on the demo set and 128
on the full data.
"""
import dataclasses
import math
import os
import typing
from typing import Optional

import mxnet as mx

from gluon_cifar.errors import InputError, shorten

# The choices and presets of the settings (the stages import them from here)
AUGMENTATIONS = ("chapter", "padcrop")
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "gluon_cifar")
DEMO_SOURCES = ("auto", "download", "bundled")
KVSTORES = ("local", "device", "dist_sync", "dist_device_sync")
SCHEDULES = ("step", "cosine", "onecycle")
TTA_MODES = ("none", "flip")  # test-time augmentation of the submission (gluon_cifar.predict)
DEFAULT_WARMUP = {"step": 0.0, "cosine": 0.0, "onecycle": 0.3}  # onecycle: PyTorch OneCycleLR's pct_start
RECIPES = {
    "chapter": {},
    "strong": {"augment": "padcrop", "lr_schedule": "onecycle", "lr": 0.2, "label_smoothing": 0.1,
               "epochs": 30, "tta": "flip"},
}
DEMO_BATCH_SIZE, FULL_BATCH_SIZE = 4, 128  # the chapter's `batch_size = 4 if demo else 128`
MAX_SEED = 2 ** 32 - 1
EXPORTS = ("best", "last")  # MXNet's and NumPy's generators take 32-bit seeds


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of one training run. `batch_size` None means the chapter's rule (see `for_data`)."""
    # data
    data_dir: Optional[str] = None
    cache_dir: str = DEFAULT_CACHE_DIR
    demo_source: str = "auto"
    reorg_dir: Optional[str] = None
    valid_ratio: float = 0.1
    batch_size: Optional[int] = None
    num_workers: int = 0
    fast_data: bool = False
    # optimisation: the chapter's numbers
    epochs: int = 5
    lr: float = 0.1
    wd: float = 5e-4
    lr_period: int = 50
    lr_decay: float = 0.1
    # recipe: beyond the chapter, off by default
    recipe: str = "chapter"
    augment: str = "chapter"
    cutout: int = 0
    lr_schedule: str = "step"
    warmup_frac: Optional[float] = None  # None: DEFAULT_WARMUP of the schedule
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    tta: str = "none"
    # the run
    devices: Optional[str] = None  # cpu, cpu:N, gpu, gpu:0,1; None: every GPU, else cpu
    seed: int = 0
    kvstore: Optional[str] = None
    job_workers: int = 1  # workers of a dist job (set from the job by gluon_cifar.pipeline, not an option)
    final: bool = False
    output_dir: str = "out"
    resume: bool = False
    overwrite: bool = False
    init_from: Optional[str] = None  # an export prefix or a checkpoint: start from those weights
    # the model you keep, and what the run says
    export: Optional[str] = None  # best or last; None: best when there is a validation split, else last
    patience: int = 0  # stop after this many epochs without a better validation accuracy; 0: never
    log_every: int = 50  # batches between progress lines when stderr is not a terminal
    tensorboard: bool = False

    def __post_init__(self):
        if self.warmup_frac is None:
            object.__setattr__(self, "warmup_frac", DEFAULT_WARMUP[self.lr_schedule])
        if self.export is None:
            object.__setattr__(self, "export", "last" if self.final else "best")
        self.check()

    def check(self):
        """Refuse, with one line naming the option, any setting the run could not use."""
        for name in ("data_dir", "cache_dir", "reorg_dir", "devices", "output_dir", "init_from"):
            self._require(getattr(self, name) != "", name, "must not be empty (leave the option out for its default)")
        for name in ("epochs", "lr_period", "log_every"):
            self._require(getattr(self, name) >= 1, name, "must be at least 1")
        self._require(self.batch_size is None or self.batch_size >= 1, "batch_size", "must be at least 1")
        check_num_workers(self.num_workers)
        self._require(self.patience >= 0, "patience", "must be at least 0 (0: no early stopping)")
        self._require(0 <= self.seed <= MAX_SEED, "seed", f"must be from 0 to {MAX_SEED}")
        self._require(_finite(self.lr) and self.lr > 0, "lr", "must be a finite number above 0")
        self._require(_finite(self.wd) and self.wd >= 0, "wd", "must be a finite number, at least 0")
        self._require(_finite(self.lr_decay) and 0 < self.lr_decay <= 1, "lr_decay",
                 "must be above 0 and at most 1 (the factor the learning rate is multiplied by)")
        self._require(_finite(self.valid_ratio) and 0 < self.valid_ratio < 1, "valid_ratio", "must be between 0 and 1")
        for name in ("warmup_frac", "label_smoothing"):
            self._require(_finite(getattr(self, name)) and 0 <= getattr(self, name) < 1, name,
                     "must be at least 0 and below 1")
        self._require(_finite(self.mixup_alpha) and self.mixup_alpha >= 0, "mixup_alpha", "must be a finite number, at least 0")
        for name, choices in (("demo_source", DEMO_SOURCES), ("recipe", RECIPES), ("augment", AUGMENTATIONS), ("lr_schedule", SCHEDULES),
                              ("tta", TTA_MODES)):
            self._require(getattr(self, name) in choices, name, f"must be one of {', '.join(choices)}")
        self._require(self.kvstore is None or self.kvstore in KVSTORES, "kvstore", f"must be one of {', '.join(KVSTORES)}")
        self._require(self.export in EXPORTS, "export", f"must be one of {', '.join(EXPORTS)}")
        if (self.export == "best" or self.patience) and self.final:
            option = "--export best" if self.export == "best" else "--patience"
            raise InputError(f"{option} needs a validation accuracy, which --final (no validation split) has not: "
                             "use --export last without --patience")
        if self.tensorboard:
            try:
                import tensorboardX  # noqa: F401 (an optional extra)
            except Exception as err:  # not installed, or broken (an incompatible protobuf raises TypeError)
                raise InputError(f"--tensorboard needs the tensorboardX package, which cannot be imported "
                                 f"({type(err).__name__}: {shorten(err, 100)}): pip install tensorboardX "
                                 "(or the package's [tensorboard] extra)") from None
        if self.resume and self.overwrite:
            raise InputError("--resume and --overwrite exclude each other: continue the run, or replace it")
        check_cutout(self.augment, self.cutout)
        check_loader_options(self.augment, self.fast_data, distributed=self.distributed)
        devices = self.contexts()
        if self.batch_size is not None and self.batch_size < len(devices):
            raise InputError(f"--batch-size {self.batch_size} is smaller than the {len(devices)} devices: "
                             f"every device needs at least one example per batch (use at least {len(devices)})")

    def _require(self, condition, name, what):
        if not condition:
            raise InputError(f"--{name.replace('_', '-')} {what}, got {shorten(repr(getattr(self, name)), 40)}")

    @property
    def distributed(self):
        return (self.kvstore or "").startswith("dist")

    def contexts(self):
        """The MXNet contexts `devices` names (d2l's `try_all_gpus` when unset)."""
        return parse_devices(self.devices) if self.devices else default_devices()

    def batch_size_for(self, num_train, num_valid, demo):
        """The batch size: the one given, else the chapter's rule: 4 on the demo set, 128 on full data, 4
        again (with a notice) for a folder too small for a full batch of 128.

        Returns (batch size, notice or None)."""
        if self.batch_size is not None:
            return self.batch_size, None
        if demo:
            return DEMO_BATCH_SIZE, None
        smallest = min(num_train, num_valid) if not self.final else num_train
        if smallest < FULL_BATCH_SIZE:
            notice = (f"batch size {DEMO_BATCH_SIZE} (the chapter's demo size): {smallest} images are too few "
                      f"for a full batch of {FULL_BATCH_SIZE}; pass --batch-size to choose")
            return DEMO_BATCH_SIZE, notice
        return FULL_BATCH_SIZE, None

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Run:
    """One run as it goes: its `config` (resolved: kvstore, job workers and batch size set) and what it
    derives, built once (gluon_cifar.pipeline) and passed whole, so no stage derives them again: this
    process's `devices`, the job's `kvstore` (a KVStore, or the name of a local one) with this worker's
    `rank` of `workers`, the reorganisation it reads and the checkpoint folder it writes."""
    config: RunConfig
    devices: list = None  # None: config.contexts()
    kvstore: object = "local"
    rank: int = 0
    workers: int = 1
    reorg_dir: Optional[str] = None
    checkpoint_dir: Optional[str] = None

    def __post_init__(self):
        if self.devices is None:
            object.__setattr__(self, "devices", self.config.contexts())

    @property
    def train_split(self):
        """The split it learns from: train_valid with --final (the chapter's last step), else train."""
        return "train_valid" if self.config.final else "train"

    @property
    def splits(self):
        """The splits it loads: the training split, and valid unless --final."""
        return (self.train_split,) if self.config.final else (self.train_split, "valid")


# Settings a resumed run may change: they do not change what the run computes up to where it stopped.
# (`epochs` too, with the step schedule: see `resume_conflict`.) A run folder may be moved (`output_dir`).
RESUMABLE = ("resume", "overwrite", "num_workers", "devices", "output_dir", "export", "patience", "log_every",
             "tensorboard")


def saved_settings_problem(saved):
    """What is wrong with `saved`, the settings a run wrote (config.json), or None: it must be a JSON object
    whose known fields have RunConfig's types (unknown fields are left to whoever wrote them)."""
    if not isinstance(saved, dict):
        return f"holds {_JSON_TYPES.get(type(saved), 'a value')}, not the run's settings (an object)"
    for field in dataclasses.fields(RunConfig):
        value = saved.get(field.name)
        if field.name in saved and not _has_type(value, field.type):
            return f"field {field.name!r} is {shorten(repr(value), 40)}, not of type {_type_name(field.type)}"
    return None


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false",
               type(None): "null"}


def _has_type(value, annotation):
    """Whether the JSON value `value` fits RunConfig annotation `annotation` (int, float, str, bool, Optional)."""
    if typing.get_origin(annotation) is typing.Union:
        return any(_has_type(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _type_name(annotation):
    args = typing.get_args(annotation)
    return " or ".join("null" if a is type(None) else a.__name__ for a in args) if args else annotation.__name__


def changed_settings(config, saved):
    """The names of the settings in which `config` differs from the `saved` dict of a run it resumes."""
    return [f.name for f in dataclasses.fields(config)
            if f.name not in RESUMABLE and f.name in saved and getattr(config, f.name) != saved[f.name]
            and not (f.name == "epochs" and config.lr_schedule == "step")]


def resume_conflict(config, saved):
    """Why `config` cannot continue the run whose settings are `saved` (a dict), or None if it can.

    More epochs extend a step-schedule run (its decays fall every --lr-period epochs, whatever the
    total); cosine and one-cycle schedules are laid out over the run's total, which is kept."""
    changed = changed_settings(config, saved)
    if not changed:
        return None
    name = changed[0]
    why = (f"--{name.replace('_', '-')} was {saved[name]!r} and is now {getattr(config, name)!r}")
    if name == "epochs":
        why += (f": the {config.lr_schedule} schedule was laid out over {saved[name]} epochs and ends "
                "there; only the step schedule extends. Start a new run from its weights with --init-from "
                "OUT/model instead")
    return why


def parse_devices(spec):
    """'cpu' -> [cpu(0)]; 'cpu:N' -> N CPU contexts; 'gpu' -> every GPU; 'gpu:0,1' -> those GPUs."""
    kind, _, rest = spec.partition(":")
    try:
        if kind == "cpu":
            count = int(rest) if rest else 1
            if count >= 1:
                return [mx.cpu(i) for i in range(count)]
        elif kind == "gpu":
            available = mx.context.num_gpus()
            ids = [int(i) for i in rest.split(",")] if rest else list(range(available))
            if not ids or max(ids) >= available:
                raise InputError(f"--devices {spec}: {available} GPU(s) usable here "
                                 f"({'this MXNet is built without CUDA' if not available else 'ids from 0'}); "
                                 "use --devices cpu")
            return [mx.gpu(i) for i in ids]
    except ValueError:
        pass
    raise InputError(f"--devices must look like cpu, cpu:2, gpu or gpu:0,1; got {spec!r}")


def default_devices():
    """Every GPU if there is one, else one CPU context (d2l's `try_all_gpus`, which returns [] on a CPU)."""
    return parse_devices("gpu") if mx.context.num_gpus() else [mx.cpu()]


def _finite(value):
    return math.isfinite(value)


def check_cutout(augment, cutout):
    """Refuse a cutout the transforms cannot make: 0 (off) to 31 pixels, with the padcrop augmentation only."""
    if not 0 <= cutout < 32:
        raise InputError(f"cutout must be 0 (off) to 31 pixels, got {cutout}")
    if cutout and augment != "padcrop":
        raise InputError("cutout is offered with the padcrop augmentation only")


def check_num_workers(num_workers):
    """Refuse a DataLoader worker count below 0 or above 4 per core (at least 8): --num-workers 100000 forked
    processes until the machine ran out of them."""
    most = max(8, 4 * (os.cpu_count() or 1))
    if not 0 <= num_workers <= most:
        raise InputError(f"--num-workers must be from 0 to {most} (4 per core here), got {num_workers}")


def check_loader_options(augment, fast, distributed):
    """Refuse what the loaders lack: the fast path has only the chapter's augmentation and no sharding."""
    if fast and (augment != "chapter" or distributed):
        raise InputError("--fast-data has only the chapter's augmentation and no sharding across workers yet: "
                         "drop --fast-data, or use --augment chapter without a dist kvstore")


