"""gluon_cifar: the d2l chapter "Image Classification (CIFAR-10) on Kaggle" as an installable package.

Importing it changes no global state. The command-line entry points (`python -m gluon_cifar.train`,
`.predict`, `.export`) switch MXNet to NumPy mode themselves and let it use every core
(`gluon_cifar.runtime`); code that imports the package calls `npx.set_np()` first, as the chapter does.
"""
from gluon_cifar import numpy_compat  # noqa: F401  (before MXNet: the NumPy names it reads; adds, never replaces)

__version__ = "0.1.0"
