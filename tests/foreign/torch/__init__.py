"""A stand-in for PyTorch 2, not PyTorch: what code probing an environment that has torch 2 installed sees.

GluonCV 0.10's import refuses this version (`torch>=1.4.0,<2.0.0 is required`); SciPy's array-API checks
look up `torch.Tensor` once torch is imported. tests/test_recipes.py and `make check-foreign` put the
folder above this one on the path.
"""
__version__ = "2.11.0"


class Tensor:
    """No array the package handles is a PyTorch tensor."""
