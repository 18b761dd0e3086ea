"""gluon_cifar: the d2l chapter "Image Classification (CIFAR-10) on Kaggle" as an installable package.

Importing it switches MXNet to NumPy mode (`npx.set_np()`), as the chapter does, and, unless the user
set OMP_NUM_THREADS, lets MXNet use every core (its default assumes hyper-threading and uses half).
"""
from . import numpy_compat  # noqa: F401  (before MXNet: the NumPy names it reads)
import os

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

from mxnet import npx  # noqa: E402  (after the thread setting, which MXNet reads when loaded)

npx.set_np()

__version__ = "0.1.0"
