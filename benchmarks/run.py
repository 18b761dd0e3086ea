"""Where users wait, the chapter's code and ours side by side on the same data: `make bench`.

`python benchmarks/run.py [--quick] [--full] [--out DIR]` prints one table (baseline, ours, ratio,
median [min-max] over repeats, the target) plus the machine and library versions, and writes the same
as JSON. Rows:

- reorg: d2l's chapter code (`shutil.copy` per file) against `reorg_cifar10_data` (hard links), first
  run and re-run, on the 50,000 + 10,000 images;
- input pipeline: the chapter's `ImageFolderDataset` + `DataLoader` against `fastdata.FastLoader`;
- training step (batch 128): the chapter's hybridized ResNet-18 with MXNet's default threads and with
  every core, ours (static memory), and PyTorch eager on the same model;
- inference (batch 128): the exported model as `predict` loads it, fused (`--fast`), INT8 (`--int8`),
  PyTorch eager;
- the 300,000-image prediction from PNG files to submission.csv, measured on 20,000 files (`--full`: all);
- INT8 quality: agreement with FP32 on the test images, accuracy change on a labelled training split.

Every timing waits for MXNet's engine (`mx.nd.waitall()`) before reading the clock, after warm-up.
Training and PyTorch rows run in their own processes (threads are fixed when a library loads). The
PyTorch rows need `torch` in the benchmark environment only (`--torch-python`, made by `make bench`);
without it they say so. `--quick` is a smoke run on the small demo set (about 2 minutes), with
counts too small for its numbers to mean anything.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.join(REPO, "..", "shared")
sys.path.insert(0, REPO)

from gluon_cifar.cli import use_all_cores

use_all_cores()  # before MXNet loads: every core unless OMP_NUM_THREADS is set

import mxnet as mx  # noqa: E402
import numpy as onp  # noqa: E402
from mxnet import npx  # noqa: E402

from gluon_cifar import predict
from gluon_cifar.data import fastdata
from gluon_cifar.deploy import fastinfer
from gluon_cifar.deploy.export import export_model, load_exported
from gluon_cifar.model import get_net, resnet18  # noqa: E402

sys.path.insert(0, HERE)
from test_folder import make_test_folder  # noqa: E402
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.data.loaders import load_datasets, make_loaders
from gluon_cifar.data.locations import REORG_DIRNAME
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.sources import unpack_archives
from gluon_cifar.data.transforms import chapter_train_transform
from gluon_cifar.images import list_images
from gluon_cifar.deploy import predict as deploy_predict

BATCH = 128
CORES = os.cpu_count() or 1
KAGGLE_TEST_SIZE = 300_000
# Counts per mode: the full run stays under 20 minutes on 2 cores; quick is a smoke test.
SIZES = {
    "full": dict(source="cifar-10", repeats=3, reorg_repeats=2, pipeline_batches=40, train_batch=BATCH,
                 train_steps=4,
                 infer_batch=BATCH, infer_batches=6, predict_baseline=2048, predict_ours=20_000, agree=10_000,
                 labelled=5000, calib=512),
    "quick": dict(source="cifar10_tiny", repeats=2, reorg_repeats=1, pipeline_batches=3, train_batch=8,
                  train_steps=1,
                  infer_batch=32, infer_batches=1, predict_baseline=128, predict_ours=256, agree=200, labelled=200,
                  calib=64),
}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# Timing

def timed(fn, repeats, warmup=1):
    """Seconds of each of `repeats` calls of `fn` after `warmup` calls, each ended by `mx.nd.waitall()`."""
    for _ in range(warmup):
        fn()
        mx.nd.waitall()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        mx.nd.waitall()
        seconds.append(time.perf_counter() - start)
    return seconds


def rate(seconds, items):
    """Items per second for each timing: the samples of a row measured in img/s."""
    return [items / s for s in seconds]


def measure(name, samples, unit):
    return {"name": name, "unit": unit, "median": statistics.median(samples), "min": min(samples),
            "max": max(samples), "samples": samples}


def missing(name, why):
    return {"name": name, "missing": why}


# Data, model and the test folder

def prepare_kaggle_dir(root, source):
    """A writable Kaggle-layout copy of `../shared/data/<source>`: files copied, archives linked and unpacked."""
    src = os.path.join(SHARED, "data", source)
    if not os.path.isdir(src):
        sys.exit(f"error: {src} not found (the benchmark reads the shared CIFAR-10 data)")
    dst = os.path.join(root, source)
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        target = os.path.join(dst, name)
        if os.path.exists(target):
            continue
        path = os.path.join(src, name)
        if os.path.isdir(path):
            shutil.copytree(path, target)
        elif name.endswith(".7z"):
            os.symlink(os.path.abspath(path), target)
        else:
            shutil.copyfile(path, target)
    unpack_archives(dst)
    return dst


def reference_export(root):
    """The shared reference ResNet-18, exported as training exports it."""
    prefix = os.path.join(root, "reference", "model")
    if not os.path.isfile(prefix + "-classes.json"):
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        net = resnet18(len(CLASSES))
        net.load_parameters(os.path.join(SHARED, "models", "resnet18_reference.params"))
        net.hybridize()
        net(mx.np.zeros((1, 3, 32, 32)))
        export_model(net, prefix, CLASSES)
    return prefix


def first_files(folder, count, dst):
    """A folder of hard links to the first `count` images of `folder` (in id order)."""
    return link_files([path for _, path in list_images(folder)[:count]], dst)


def link_files(paths, dst):
    """A fresh folder `dst` of hard links to `paths`."""
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for path in paths:
        os.link(path, os.path.join(dst, os.path.basename(path)))
    return dst


# Rows

def reorg_rows(kaggle_dir, root, repeats):
    """The chapter's copy-based reorganisation (d2l's own functions) against ours, first run and re-run."""
    from d2l import mxnet as d2l
    chapter_dir = os.path.join(kaggle_dir, REORG_DIRNAME)
    ours_dir = os.path.join(root, "reorg_ours")

    def chapter():
        shutil.rmtree(chapter_dir, ignore_errors=True)
        start = time.perf_counter()
        labels = d2l.read_csv_labels(os.path.join(kaggle_dir, "trainLabels.csv"))
        d2l.reorg_train_valid(kaggle_dir, labels, 0.1)
        d2l.reorg_test(kaggle_dir)
        return time.perf_counter() - start

    def ours():
        shutil.rmtree(ours_dir, ignore_errors=True)
        start = time.perf_counter()
        reorg_cifar10_data(kaggle_dir, 0.1, ours_dir)
        return time.perf_counter() - start

    baseline = [chapter() for _ in range(repeats)]
    shutil.rmtree(chapter_dir, ignore_errors=True)
    first = [ours() for _ in range(repeats)]
    rerun = timed(lambda: reorg_cifar10_data(kaggle_dir, 0.1, ours_dir), 3, warmup=0)
    images = len(os.listdir(os.path.join(kaggle_dir, "train"))) + len(os.listdir(os.path.join(kaggle_dir, "test")))
    return ours_dir, [
        row(f"reorg, first run ({images} images)", measure("chapter: shutil.copy", baseline, "s"),
            measure("ours: hard links", first, "s"), "10x faster", lower_is_better=True),
        row("reorg, re-run", measure("chapter: copies again", baseline, "s"),
            measure("ours: complete, skipped", rerun, "s"), "under 0.5 s", lower_is_better=True,
            met=max(rerun) < 0.5),
    ]


def pipeline_rows(reorg_dir, batches, repeats):
    """Images per second out of the chapter's training loader and out of FastLoader (same augmentation)."""
    datasets = load_datasets(reorg_dir)
    chapter_loader = make_loaders(datasets, BATCH, chapter_train_transform())["train"]
    start = time.perf_counter()
    images, labels, _ = fastdata.decoded_split(reorg_dir, "train")
    decode_seconds = time.perf_counter() - start
    fast_loader = fastdata.FastLoader(images, labels, BATCH)

    def run(loader):
        def go():
            for i, (X, y) in enumerate(loader):
                X.wait_to_read()
                if i + 1 == batches:
                    break
        return go

    n = min(batches, len(fast_loader)) * BATCH
    baseline = rate(timed(run(chapter_loader), repeats), n)
    ours = rate(timed(run(fast_loader), repeats), n)
    return [row("input pipeline, chapter transforms (img/s)",
                measure("chapter: ImageFolderDataset + DataLoader, 0 workers", baseline, "img/s"),
                measure("ours: FastLoader (decoded once, batched augmentation)", ours, "img/s"),
                "15,000 img/s", met=statistics.median(ours) >= 15_000,
                note=f"one-time decode of {len(images)} images into the cache: {decode_seconds:.1f} s")]


def worker_train(args):
    """In its own process: seconds per training step of the chapter's ResNet-18, batch 128, random data."""
    from mxnet import autograd, gluon
    ctx = mx.cpu()
    net = get_net([ctx])
    net.hybridize(static_alloc=args.static, static_shape=args.static)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.02, "momentum": 0.9, "wd": 5e-4})
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    X = mx.np.random.normal(size=(args.batch_size, 3, 32, 32))
    y = mx.np.array(onp.random.randint(0, 10, args.batch_size), dtype="int32")

    def step():
        with autograd.record():
            l = loss(net(X), y)
        l.backward()
        trainer.step(args.batch_size)

    seconds = timed(step, args.steps, warmup=args.warmup)
    profile = None
    if args.profile:
        mx.profiler.set_config(profile_all=True, aggregate_stats=True, filename=args.profile + ".trace.json")
        mx.profiler.set_state("run")
        step()
        mx.nd.waitall()
        mx.profiler.set_state("stop")
        profile = top_operators(json.loads(mx.profiler.dumps(format="json")))
    print(json.dumps({"seconds": seconds, "profile": profile,
                      "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}))


def top_operators(stats, count=8):
    """The operators taking most time in one profiled step: [(name, total ms, share of the step)]."""
    ops = {name: op["Total"] for domain, table in stats.get("Time", {}).items() if "operator" in domain.lower()
           for name, op in table.items()}
    total = sum(ops.values()) or 1
    return [(name, round(ms, 1), round(ms / total, 3)) for name, ms in
            sorted(ops.items(), key=lambda kv: -kv[1])[:count]]


def run_worker(flags, threads, root, **env):
    env = {**os.environ, **env, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "train", *flags],
                         env=env, capture_output=True, text=True, cwd=root)
    if out.returncode:
        raise RuntimeError(f"training worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_torch(torch_python, train_batch, steps, batch, batches):
    """The PyTorch eager rows from benchmarks/torch_rows.py, or why they are missing."""
    if not torch_python or not os.path.exists(torch_python):
        return None, f"no benchmark environment with torch ({torch_python or 'none given'}; `make bench` makes one)"
    out = subprocess.run([torch_python, "-W", "ignore", os.path.join(HERE, "torch_rows.py"), "--threads",
                          str(CORES), "--train-batch-size", str(train_batch), "--steps", str(steps),
                          "--batch-size", str(batch), "--batches", str(batches)],
                         capture_output=True, text=True)
    if out.returncode:
        return None, f"torch_rows.py failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}"
    return json.loads(out.stdout.strip().splitlines()[-1]), None


def training_rows(batch, steps, torch_result, root):
    """Training-step throughput: chapter with MXNet's default threads and with every core, ours, PyTorch."""
    common = ["--steps", str(steps), "--warmup", "2" if steps > 1 else "1", "--batch-size", str(batch)]
    default_threads = run_worker(common, max(1, CORES // 2), root)
    chapter = run_worker(common, CORES, root)
    ours = run_worker(common + ["--static"], CORES, root)
    # Unbulked, so the profile names single operators; a separate run, as bulking changes the timing.
    profile = run_worker(["--steps", "0", "--warmup", "1", "--batch-size", str(batch), "--static", "--profile",
                          os.path.join(root, "train_profile")], CORES, root, MXNET_EXEC_BULK_EXEC_TRAIN="0")
    torch_data, why = torch_result
    torch_row = (measure("PyTorch eager", rate(torch_data["train_step_seconds"], batch), "img/s")
                 if torch_data else missing("PyTorch eager", why))
    ours_m = measure("ours: all cores, static_alloc/static_shape", rate(ours["seconds"], batch), "img/s")
    return [
        row(f"training step, batch {batch}, vs MXNet as the chapter runs it (img/s)",
            measure(f"chapter: hybridize(), MXNet default threads ({max(1, CORES // 2)})",
                    rate(default_threads["seconds"], batch), "img/s"), ours_m, "-"),
        row(f"training step, batch {batch}, vs the chapter on every core (img/s)",
            measure(f"chapter: hybridize(), {CORES} threads", rate(chapter["seconds"], batch), "img/s"),
            ours_m, "-"),
        row(f"training step, batch {batch}, vs PyTorch eager (img/s)", torch_row, ours_m, "2x PyTorch eager",
            met_ratio=2.0, note="profile of one step of ours (operator, ms, share): "
                               + "; ".join(f"{n} {ms} {share:.0%}" for n, ms, share in profile["profile"])),
    ]


def inference_rows(prefix, calib_images, batch, batches, repeats, torch_result):
    """Inference throughput on random batches: the export as predict loads it, fused, INT8."""
    X = mx.np.random.normal(size=(batch, 3, 32, 32))
    chapter_net, _ = load_exported(prefix, mx.cpu())
    fused, _ = fastinfer.load_fast(prefix, batch)
    int8, _ = fastinfer.load_fast(prefix, batch, calib_images)

    def run(net):
        return lambda: [net(X).argmax(axis=1).asnumpy() for _ in range(batches)]

    results = {name: rate(timed(run(net), repeats), batches * batch)
               for name, net in (("chapter", chapter_net), ("fused", fused), ("int8", int8))}
    torch_data, why = torch_result
    torch_row = (measure("PyTorch eager", rate(torch_data["inference_batch_seconds"], batch), "img/s")
                 if torch_data else missing("PyTorch eager", why))
    chapter = measure("chapter: exported SymbolBlock, as predict loads it", results["chapter"], "img/s")
    return [
        row(f"inference, batch {batch}, fused FP32 (img/s)", chapter,
            measure("ours: --fast (MKLDNN, all 20 convolutions fused)", results["fused"], "img/s"), "-"),
        row(f"inference, batch {batch}, INT8 (img/s)", chapter,
            measure("ours: --int8 (calibrated on training images)", results["int8"], "img/s"), "400 img/s",
            met=statistics.median(results["int8"]) >= 400),
        row(f"inference, batch {batch}, INT8 vs PyTorch eager (img/s)", torch_row,
            measure("ours: --int8", results["int8"], "img/s"), "-"),
    ]


def prediction_rows(prefix, test_folder, train_dir, root, n_baseline, n_ours, n_calib, full):
    """PNG files to submission.csv: the chapter's predict path and ours (--int8), scaled to 300,000 files."""
    base_dir = first_files(test_folder, n_baseline, os.path.join(root, f"predict_{n_baseline}"))
    ours_dir = test_folder if full else first_files(test_folder, n_ours, os.path.join(root, f"predict_{n_ours}"))
    n_ours = len(list_images(ours_dir))

    def chapter():
        net, classes = load_exported(prefix, mx.cpu())
        deploy_predict.predict_folder(net, base_dir, classes, os.path.join(root, "submission_chapter.csv"),
                                      deploy_predict.Inference(BATCH, mx.cpu()))

    def ours():
        predict.main(["--model", prefix, "--images", ours_dir, "--output",
                      os.path.join(root, "submission_ours.csv"), "--int8", train_dir,
                      "--calib-size", str(n_calib)])

    scale = KAGGLE_TEST_SIZE / n_baseline, KAGGLE_TEST_SIZE / n_ours
    baseline = [s * scale[0] for s in timed(chapter, 1, warmup=0)]
    fast = [s * scale[1] for s in timed(ours, 1, warmup=0)]
    how = "measured" if full else f"extrapolated from {n_baseline} (chapter) and {n_ours} (ours) files"
    return [row(f"300,000-image prediction, PNG files to submission.csv (s, {how})",
                measure("chapter: predict_folder (DataLoader, one image at a time)", baseline, "s"),
                measure("ours: predict --int8 (calibration, decoding overlapped, INT8)", fast, "s"),
                "under 900 s", lower_is_better=True, met=max(fast) < 900,
                note="includes loading the model and INT8 calibration; one run each")]


def quality_rows(prefix, test_folder, kaggle_dir, calib_images, n_agree, n_labelled, root):
    """INT8 against FP32: agreement on test images, accuracy on labelled training images not calibrated on."""
    fp32, _ = fastinfer.load_fast(prefix, BATCH)
    int8, _ = fastinfer.load_fast(prefix, BATCH, calib_images)
    test = first_files(test_folder, n_agree, os.path.join(root, f"agree_{n_agree}"))
    _, p32 = fastinfer.predict_fast(fp32, test, BATCH)
    _, p8 = fastinfer.predict_fast(int8, test, BATCH)
    agreement = float(onp.mean(onp.array(p32) == onp.array(p8)))
    labels = read_csv_labels(os.path.join(kaggle_dir, "trainLabels.csv"))
    train = list_images(os.path.join(kaggle_dir, "train"))[-n_labelled:]  # far from the calibration images
    held = link_files([path for _, path in train], os.path.join(root, f"labelled_{n_labelled}"))
    truth = onp.array([CLASSES.index(labels[str(image_id)]) for image_id, _ in train])
    acc32 = float(onp.mean(onp.array(fastinfer.predict_fast(fp32, held, BATCH)[1]) == truth))
    acc8 = float(onp.mean(onp.array(fastinfer.predict_fast(int8, held, BATCH)[1]) == truth))
    return [
        {"stage": f"INT8 agreement with FP32, {len(p8)} test images", "value": agreement,
         "shown": f"{agreement:.2%}", "target": ">= 99%", "met": agreement >= 0.99},
        {"stage": f"INT8 accuracy change, {len(truth)} labelled training images (ids {train[0][0]}-{train[-1][0]})",
         "value": acc8 - acc32, "shown": f"FP32 {acc32:.2%}, INT8 {acc8:.2%}: {100 * (acc8 - acc32):+.2f} points",
         "target": "loses <= 0.3 points", "met": acc32 - acc8 <= 0.003},
    ]


def row(stage, baseline, ours, target, lower_is_better=False, met=None, met_ratio=None, note=""):
    """One table row; ratio is how many times better ours is (baseline / ours for seconds)."""
    ratio = None
    if "median" in baseline and "median" in ours:
        ratio = baseline["median"] / ours["median"] if lower_is_better else ours["median"] / baseline["median"]
    if met is None and met_ratio is not None and ratio is not None:
        met = ratio >= met_ratio
    if met is None and target.endswith("x faster") and ratio is not None:
        met = ratio >= float(target.split("x")[0])
    return {"stage": stage, "baseline": baseline, "ours": ours, "ratio": ratio, "target": target, "met": met,
            "note": note}


# Report

def shown(m):
    if "missing" in m:
        return f"{m['name']}: missing ({m['missing']})"
    return f"{m['name']}: {m['median']:.4g} [{m['min']:.4g}-{m['max']:.4g}] {m['unit']}"


def environment():
    import d2l
    import cv2
    model = "unknown"
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    flags = open("/proc/cpuinfo").read() if os.path.isfile("/proc/cpuinfo") else ""
    return {"cpu": model, "cores": CORES, "avx2": " avx2" in flags, "avx512f": " avx512f" in flags,
            "python": platform.python_version(), "mxnet": mx.__version__, "numpy": onp.__version__,
            "opencv": cv2.__version__, "d2l": d2l.__version__,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "platform": platform.platform()}


def report(rows, env, seconds):
    lines = ["| stage | baseline | ours | ratio | target | met |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "shown" in r:
            lines.append(f"| {r['stage']} | | {r['shown']} | | {r['target']} | {'yes' if r['met'] else 'NO'} |")
            continue
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(f"| {r['stage']} | {shown(r['baseline'])} | {shown(r['ours'])} | {ratio} | {r['target']} | {met} |")
    notes = [f"- {r['stage']}: {r['note']}" for r in rows if r.get("note")]
    machine = ", ".join(f"{k} {v}" for k, v in env.items())
    return "\n".join(lines + [""] + notes + ["", f"machine: {machine}", f"benchmark wall time: {seconds:.0f} s"])


def main():
    npx.set_np()
    parser = argparse.ArgumentParser(description="Benchmark the chapter's code against ours, side by side.")
    parser.add_argument("--quick", action="store_true", help="smoke run on the demo set (about 2 minutes)")
    parser.add_argument("--full", action="store_true", help="predict all 300,000 files instead of 20,000")
    parser.add_argument("--work-dir", default=os.path.join("/tmp", "gluon_cifar_bench"),
                        help="where the data is unpacked and reorganised (kept between runs)")
    parser.add_argument("--output", default="benchmark.json", help="JSON file with every row and sample")
    parser.add_argument("--torch-python", default=os.path.join(REPO, ".venv-bench", "bin", "python"),
                        help="a Python with torch, for the PyTorch eager rows")
    parser.add_argument("--worker", choices=["train"], help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=BATCH, help=argparse.SUPPRESS)
    parser.add_argument("--static", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_train(args)

    started = time.perf_counter()
    size = SIZES["quick" if args.quick else "full"]
    root = os.path.join(args.work_dir, "quick" if args.quick else "full")
    os.makedirs(root, exist_ok=True)
    kaggle_dir = prepare_kaggle_dir(args.work_dir, size["source"])
    prefix = reference_export(args.work_dir)
    calib = fastinfer.read_calibration_images(os.path.join(kaggle_dir, "train"), size["calib"])
    total = KAGGLE_TEST_SIZE if args.full else size["predict_ours"]
    test_folder = make_test_folder(os.path.join(kaggle_dir, "test"),
                                   os.path.join(args.work_dir, f"test_{size['source']}"), total)

    def progress(stage):
        print(f"{stage} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    reorg_dir, rows = reorg_rows(kaggle_dir, root, size["reorg_repeats"])
    progress("reorg")
    rows += pipeline_rows(reorg_dir, size["pipeline_batches"], size["repeats"])
    progress("input pipeline")
    torch_result = run_torch(args.torch_python, size["train_batch"], size["train_steps"], size["infer_batch"],
                             size["infer_batches"])
    rows += training_rows(size["train_batch"], size["train_steps"], torch_result, root)
    progress("training")
    rows += inference_rows(prefix, calib, size["infer_batch"], size["infer_batches"], size["repeats"],
                           torch_result)
    progress("inference")
    rows += prediction_rows(prefix, test_folder, os.path.join(kaggle_dir, "train"), root,
                            size["predict_baseline"], size["predict_ours"], size["calib"], args.full)
    progress("prediction")
    rows += quality_rows(prefix, test_folder, kaggle_dir, calib, size["agree"], size["labelled"], root)
    env = environment()
    seconds = time.perf_counter() - started
    print(report(rows, env, seconds))
    with open(args.output + ".tmp", "w") as f:
        json.dump({"mode": "quick" if args.quick else ("full-300k" if args.full else "full"), "rows": rows,
                   "machine": env, "seconds": seconds, "torch": (torch_result[0] or {}).get("version")}, f,
                  indent=1)
    os.replace(args.output + ".tmp", args.output)


if __name__ == "__main__":
    main()
