"""Running Python code against one checkout's `gluon_cifar`, and proving that it was that checkout's.

`python -c CODE` puts the working directory ahead of PYTHONPATH on sys.path, so a baseline run from inside
this repository silently imports this repository's package: a benchmark then compares the new code with
itself. Here the child runs in the checkout, with the checkout first on PYTHONPATH, and refuses to run its
code unless `gluon_cifar` was imported from there.
"""
import os
import subprocess
import sys

GUARD = """
import os, sys, gluon_cifar
_where, _checkout = os.path.realpath(gluon_cifar.__file__), os.path.realpath(os.environ["BENCH_CHECKOUT"])
if os.path.commonpath([_where, _checkout]) != _checkout:
    sys.exit(f"gluon_cifar was imported from {_where}, not from the checkout {_checkout}")
"""


def checkout_env(checkout):
    """This process's environment with `checkout` first on PYTHONPATH (an existing PYTHONPATH stays after it:
    it may name where MXNet is, as on the device machines)."""
    path = os.pathsep.join(p for p in (checkout, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "BENCH_CHECKOUT": checkout}


def run_python(checkout, code, args, python=sys.executable):
    """Run `code` with `args` in a fresh `python` whose `gluon_cifar` is `checkout`'s; its stdout.
    Paths in `args` must be absolute (the child's working directory is the checkout)."""
    checkout = os.path.abspath(checkout)
    result = subprocess.run([python, "-c", GUARD + code, *map(str, args)], cwd=checkout, text=True,
                            capture_output=True, env=checkout_env(checkout))
    if result.returncode:
        sys.exit(f"the run in {checkout} failed: {(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return result.stdout
