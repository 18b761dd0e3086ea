"""The reorganisation's reuse check, baseline against this checkout, side by side in one run:

    python benchmarks/reorg_reuse.py BASELINE_CHECKOUT DATA_DIR [--repeats 5]

For each checkout (its `gluon_cifar` imported in a subprocess of its own), a reorganisation of DATA_DIR
(read only) is built once in a temporary folder, then the re-run that finds it complete is timed,
the two checkouts taking turns. Prints the median [min-max] of each and the candidate / baseline ratio.
(The baseline of issue 20: the check by size, mtime and inode; the candidate hashes every image's content.)
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RERUN = """
import sys, time
import gluon_cifar
try:
    from gluon_cifar.data.reorg import reorg_cifar10_data
except ImportError:  # a checkout from before the layout of one folder per stage (a baseline)
    from gluon_cifar.data import reorg_cifar10_data
reorg_cifar10_data(sys.argv[1], 0.1, sys.argv[2])  # built on the first call, then found complete
start = time.perf_counter()
reorg_cifar10_data(sys.argv[1], 0.1, sys.argv[2])
print(time.perf_counter() - start)
"""


def rerun_seconds(checkout, data_dir, reorg_dir):
    result = subprocess.run([sys.executable, "-c", RERUN, data_dir, reorg_dir], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": checkout}, check=True)
    return float(result.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", help="a checkout of the baseline (its root, holding gluon_cifar/)")
    parser.add_argument("data_dir", help="Kaggle-layout folder with train/, test/, trainLabels.csv")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    checkouts = {"baseline": os.path.abspath(args.baseline), "candidate": HERE}
    seconds = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.data_dir))) as work:
        for _ in range(args.repeats):
            for name, checkout in checkouts.items():
                seconds[name].append(rerun_seconds(checkout, args.data_dir, os.path.join(work, name)))
    for name, values in seconds.items():
        print(f"{name:10s} re-run {statistics.median(values):.2f} s [{min(values):.2f}-{max(values):.2f}] "
              f"({checkouts[name]})")
    print(f"candidate / baseline: {statistics.median(seconds['candidate']) / statistics.median(seconds['baseline']):.2f}")


if __name__ == "__main__":
    sys.exit(main())
