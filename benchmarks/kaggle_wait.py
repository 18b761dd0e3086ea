"""What a Kaggle user waits for, today's path against the new one, side by side in one run on the same data.

    python benchmarks/kaggle_wait.py DATA_DIR [--images N] [--train N] [--cores 1,2] [--baseline DIR] [--quick]

DATA_DIR is a Kaggle-layout folder with train/ and test/ unpacked (../shared/data/cifar-10 after unpacking
its .7z archives). Two parts, each command run whole in its own process, as a user runs it:

(a) the test folder (benchmarks/test_folder.py: the real test images, then transformed copies, up to
    --images files; the competition's is 300,000) to submission.csv with flip TTA: `predict --tta flip`
    (today's path), `predict --fast --tta flip`, `predict --int8 TRAIN --tta flip` with its agreement with
    FP32, and ONNX Runtime on the same model (decode, normalise, images and mirrors in one batch) as a
    reference row where .venv-onnx is installed;
(b) the first reorganisation (timed inside its command, after the imports) of the first --train training
    images and that test folder: today's code
    (--baseline: a checkout of it, run in a process that imports that checkout's package and proves it;
    without one, this package with the check in one process, which is today's check), each on each of
    --cores core counts (CPU affinity).
Prints each row's seconds, images/s and ratio to today, and a linear extrapolation to 300,000 test images
(50,000 + 300,000 for the reorganisation), which is an extrapolation and says so.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.join(REPO, "..", "shared")
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

from checkouts import checkout_env, run_python  # noqa: E402
from onnx_runtime import ONNX_PYTHON, cpu_name  # noqa: E402
from test_folder import make_test_folder  # noqa: E402

KAGGLE_TEST, KAGGLE_TRAIN = 300_000, 50_000
FORWARD_GFLOP = 1.1  # one ResNet-18 forward pass of a 32x32 image (a training step, about 3.3, is three)
SMALL = 256  # test images of the run that measures a command's fixed cost
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Runs in the ONNX Runtime environment: a folder of <id>.png to id,label with flip TTA, as `predict` does.
ORT_SUBMISSION = """
import csv, json, os, sys, numpy as np, onnxruntime as ort
from PIL import Image
model, classes, folder, output, batch = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
classes = json.load(open(classes))
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
mean, std = np.array([0.4914, 0.4822, 0.4465], np.float32), np.array([0.2023, 0.1994, 0.2010], np.float32)
ids = sorted(int(f[:-4]) for f in os.listdir(folder) if f.endswith(".png"))
labels = []
for start in range(0, len(ids), batch):
    x = np.stack([np.asarray(Image.open(os.path.join(folder, f"{i}.png")).convert("RGB"))
                  for i in ids[start:start + batch]])
    x = ((x.astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2)
    logits = session.run(None, {name: np.concatenate([x, x[:, :, :, ::-1]])})[0]
    labels += [classes[k] for k in ((logits[:len(x)] + logits[len(x):]) / 2).argmax(axis=1)]
with open(output, "w", newline="") as f:
    csv.writer(f).writerows([("id", "label")] + list(zip(ids, labels)))
"""
# Runs in a fresh process on the given cores: the first reorganisation of a Kaggle-layout folder; prints
# its wall and CPU seconds, worker processes included (imports left out: seconds that do not grow with the
# images).
REORG = """
import os, resource, sys, time
os.sched_setaffinity(0, {int(c) for c in sys.argv[3].split(",")})
try:
    from gluon_cifar.data.reorg import reorg_cifar10_data
except ImportError:  # a checkout from before the layout of one folder per stage (a baseline)
    from gluon_cifar.data import reorg_cifar10_data
def cpu():
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(r.ru_utime + r.ru_stime for r in usage)
start, start_cpu = time.perf_counter(), cpu()
reorg_cifar10_data(sys.argv[1], 0.1, sys.argv[2])
print(time.perf_counter() - start, cpu() - start_cpu)
"""


def sgemm_gflops(n=2048, repeats=10):
    """This machine's single-precision matrix-product rate (NumPy's BLAS, every core), GFLOP/s: the ceiling
    the rows are measured against."""
    import numpy as np
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def timed_command(argv):
    """Wall seconds of one command of this package in a fresh process (imports and model loading included),
    run in the repository with it first on PYTHONPATH."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, cwd=REPO, env=checkout_env(REPO), capture_output=True)
    return time.perf_counter() - start


def reference_export(folder):
    """The shared reference ResNet-18 exported as training exports it (and as model.onnx where onnx is there)."""
    import mxnet as mx
    from gluon_cifar.deploy.export import export_model
    from gluon_cifar.deploy.onnx import export_onnx
    from gluon_cifar.model import resnet18
    from gluon_cifar.errors import InputError
    mx.npx.set_np()
    prefix = os.path.join(folder, "model")
    net = resnet18(len(CLASSES))
    net.load_parameters(os.path.join(SHARED, "models", "resnet18_reference.params"))
    net.hybridize()
    net(mx.np.zeros((1, 3, 32, 32)))
    export_model(net, prefix, CLASSES)
    try:
        export_onnx(prefix, prefix + ".onnx")
    except InputError as err:
        print(f"no ONNX Runtime row: {err}")
    return prefix


def kaggle_subset(data_dir, n_train, test_folder, dst):
    """A Kaggle-layout folder of hard links: the first `n_train` training images, their labels, `test_folder`."""
    from gluon_cifar.data.labels import read_csv_labels
    from gluon_cifar.images import list_images
    labels = read_csv_labels(os.path.join(data_dir, "trainLabels.csv"))
    for split, paths in (("train", [p for _, p in list_images(os.path.join(data_dir, "train"))[:n_train]]),
                         ("test", [p for _, p in list_images(test_folder)])):
        os.makedirs(os.path.join(dst, split))
        for path in paths:
            os.link(path, os.path.join(dst, split, os.path.basename(path)))
    ids = sorted(int(name[:-4]) for name in os.listdir(os.path.join(dst, "train")))
    pd.DataFrame({"id": ids, "label": [labels[str(i)] for i in ids]}).to_csv(
        os.path.join(dst, "trainLabels.csv"), index=False)
    return dst


def show(rows, count, full, baseline):
    """Print rows of (name, seconds): seconds, images/s, ratio to `baseline`, extrapolated to `full` images."""
    for name, seconds in rows.items():
        ratio = rows[baseline] / seconds
        print(f"  {name:44s} {seconds:8.1f} s {count / seconds:8.1f} img/s  x{ratio:5.2f}  "
              f"-> {full:,} images: {seconds * full / count:7.0f} s (extrapolated)")


def submission_rows(args, prefix, test_folder, calib_dir, work):
    """(a): the test folder to submission.csv with flip TTA, each path as a whole command, run on the folder
    and on its first SMALL images: the difference is the rate per image, the rest the command's fixed cost
    (imports, model loading, INT8 calibration), and both extrapolate to the competition's 300,000."""
    small = os.path.join(work, "small")
    os.makedirs(small)
    for image_id in range(1, SMALL + 1):
        os.link(os.path.join(test_folder, f"{image_id}.png"), os.path.join(small, f"{image_id}.png"))
    predict = [sys.executable, "-m", "gluon_cifar.predict", "--model", prefix, "--tta", "flip"]
    commands = {"today: predict --tta flip": predict,
                "predict --fast --tta flip": predict + ["--fast"],
                "predict --int8 TRAIN --tta flip": predict + ["--int8", calib_dir]}
    if os.path.isfile(prefix + ".onnx") and os.path.isfile(args.onnx_python):
        commands["ONNX Runtime, same model (reference)"] = [args.onnx_python, "-c", ORT_SUBMISSION,
                                                            prefix + ".onnx", prefix + "-classes.json"]
    labels, rows = {}, {}
    for name, argv in commands.items():
        output = os.path.join(work, "submission.csv")
        ort = argv[0] == args.onnx_python
        times = [timed_command(argv + ([folder, output, "128"] if ort else ["--images", folder, "--output", output]))
                 for folder in (small, test_folder)]
        labels[name] = pd.read_csv(output)["label"]
        rate = (args.images - SMALL) / (times[1] - times[0])
        rows[name] = times[1], rate, times[0] - SMALL / rate
    today, sgemm = rows["today: predict --tta flip"], sgemm_gflops()
    for name, (seconds, rate, fixed) in rows.items():
        print(f"  {name:38s} {seconds:7.1f} s whole; {rate:6.1f} img/s + {fixed:5.1f} s fixed; "
              f"x{today[0] / seconds:5.2f} whole, x{rate / today[1]:5.2f} per image -> {KAGGLE_TEST:,} images: "
              f"{fixed + KAGGLE_TEST / rate:6.0f} s (extrapolated); {2 * FORWARD_GFLOP * rate / sgemm:.0%} of sgemm")
    print(f"  this machine's sgemm: {sgemm:.0f} GFLOP/s; {KAGGLE_TEST:,} images with flip TTA are "
          f"{2 * KAGGLE_TEST:,} forward passes of {FORWARD_GFLOP} GFLOP: {2 * KAGGLE_TEST * FORWARD_GFLOP / sgemm:.0f} s "
          "at that rate (MKLDNN's fused convolutions may beat NumPy's sgemm; INT8 is not bound by it)")
    for name in list(rows)[1:]:
        print(f"  {name} agrees with today's predictions on {(labels[name] == labels[next(iter(rows))]).mean():.2%} "
              f"of {args.images} images")


def reorg_rows(args, kaggle_dir, work):
    """(b): the first reorganisation, today's code against this package, each on each --cores count, the
    rows taking turns for --repeats rounds (a change in the machine's load hits all of them); medians, and
    each new row's ratio to today's on the same cores."""
    cores = sorted(os.sched_getaffinity(0))
    today = "today" + (f" ({args.baseline})" if args.baseline else ": check in one process")
    runs, pairs = {}, []  # (today's row, the new row it is compared with)
    for n in args.cores:
        old = f"{today}, {n} core(s)" if args.baseline else today  # (without a baseline: one row, 1 core)
        runs[old] = args.baseline or REPO, cores[:n] if args.baseline else cores[:1]
        runs[f"new, {n} core(s)"] = REPO, cores[:n]
        pairs.append((old, f"new, {n} core(s)"))
    seconds, cpu = {name: [] for name in runs}, {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (checkout, use) in runs.items():
            target = tempfile.mkdtemp(dir=work, prefix="reorg.")
            out = run_python(checkout, REORG, [kaggle_dir, os.path.join(target, "r"), ",".join(map(str, use))])
            seconds[name].append(float(out.split()[0]))
            cpu[name].append(float(out.split()[1]))
            shutil.rmtree(target)
    count = args.train + args.images
    for baseline, new in pairs:
        show({name: statistics.median(seconds[name]) for name in (baseline, new)}, count,
             KAGGLE_TRAIN + KAGGLE_TEST, baseline)
    for name in runs:
        print(f"  {name}: wall {' '.join(f'{s:.1f}' for s in seconds[name])} s; CPU (workers included) "
              f"{1e6 * statistics.median(cpu[name]) / count:.0f} us/image")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="Kaggle-layout folder with train/, test/ unpacked and trainLabels.csv")
    parser.add_argument("--images", type=int, default=KAGGLE_TEST, help="test folder size")
    parser.add_argument("--train", type=int, default=KAGGLE_TRAIN, help="training images to reorganise")
    parser.add_argument("--cores", default=None, help="core counts for the reorganisation rows (default: 1,all)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the reorganisation rows")
    parser.add_argument("--baseline", help="a checkout of today's code (for the reorganisation's baseline row)")
    parser.add_argument("--onnx-python", default=ONNX_PYTHON, help="Python with onnxruntime and Pillow")
    parser.add_argument("--quick", action="store_true", help="1,000 test and 1,000 training images")
    parser.add_argument("--skip", choices=("submission", "reorg"), help="leave one part out")
    parser.add_argument("--work-dir", default=tempfile.gettempdir(), help="where the folders go (one file system)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.train = 1000, 1000
    if args.images <= SMALL:
        parser.error(f"--images must be over {SMALL}")
    available = len(os.sched_getaffinity(0))
    args.cores = [int(n) for n in args.cores.split(",")] if args.cores else sorted({1, available})
    work = tempfile.mkdtemp(dir=os.path.abspath(args.work_dir), prefix="kaggle_wait.")
    try:
        test_folder = make_test_folder(os.path.join(args.data_dir, "test"), os.path.join(work, "test"), args.images)
        print(f"{cpu_name()}, {available} cores available; {args.images:,} test images, {args.train:,} training "
              f"images; rates under whatever else the machine runs")
        if args.skip != "submission":
            print("(a) test folder to submission.csv, flip TTA (whole commands)")
            calib = os.path.join(work, "calib")
            os.makedirs(calib)
            for image_id in range(1, 513):
                os.link(os.path.join(args.data_dir, "train", f"{image_id}.png"), os.path.join(calib, f"{image_id}.png"))
            submission_rows(args, reference_export(work), test_folder, calib, work)
        if args.skip != "reorg":
            print("(b) first reorganisation (whole commands)")
            reorg_rows(args, kaggle_subset(args.data_dir, args.train, test_folder, os.path.join(work, "kaggle")), work)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
