"""The reorganisation's reuse check, baseline against this checkout, side by side in one run:

    python benchmarks/reorg_reuse.py BASELINE_CHECKOUT DATA_DIR [--repeats 5]

For each checkout (its own `gluon_cifar`, proven so, in a subprocess: benchmarks/checkouts.py), a reorganisation of DATA_DIR
(read only) is built once in a temporary folder, then the re-run that finds it complete is timed,
the two checkouts taking turns. Prints the median [min-max] of each and the candidate / baseline ratio.
(The baseline of issue 20: the check by size, mtime and inode; the candidate hashes every image's content.)
"""
import argparse
import os
import statistics
import sys
import tempfile

from checkouts import run_python

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RERUN = """
import sys, time
try:
    from gluon_cifar.data.reorg import reorg_cifar10_data
except ImportError:  # a checkout from before the layout of one folder per stage (a baseline)
    from gluon_cifar.data import reorg_cifar10_data
reorg_cifar10_data(sys.argv[1], 0.1, sys.argv[2])  # built on the first call, then found complete
start = time.perf_counter()
reorg_cifar10_data(sys.argv[1], 0.1, sys.argv[2])
print(time.perf_counter() - start)
"""


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
                out = run_python(checkout, RERUN, [os.path.abspath(args.data_dir), os.path.join(work, name)])
                seconds[name].append(float(out.split()[-1]))
    for name, values in seconds.items():
        print(f"{name:10s} re-run {statistics.median(values):.2f} s [{min(values):.2f}-{max(values):.2f}] "
              f"({checkouts[name]})")
    print(f"candidate / baseline: {statistics.median(seconds['candidate']) / statistics.median(seconds['baseline']):.2f}")


if __name__ == "__main__":
    sys.exit(main())
