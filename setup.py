"""Install gluon_cifar. MXNet itself comes from an extra: `[cpu]` (mxnet) or `[gpu]` (mxnet-cu112)."""
from setuptools import find_packages, setup

setup(
    name="gluon_cifar",
    version="0.1.0",
    description="The d2l Kaggle CIFAR-10 chapter (MXNet/Gluon) as an installable, tested package",
    packages=find_packages(include=["gluon_cifar", "gluon_cifar.*"]),
    package_data={"gluon_cifar": ["demo_sample.zip"]},  # the offline demo (gluon_cifar.data.bundled_sample)
    python_requires=">=3.8,<3.12",
    install_requires=[
        "numpy==1.23.5",  # MXNet 1.9.1 uses np.bool (removed in 1.24); d2l 1.0.3 pins the same
        "pandas",
        "d2l==1.0.3",
        "gluoncv==0.10.5.post0",
        "matplotlib",
        "Pillow",  # decodes every image once at reorganisation, to reject corrupt files early
        "opencv-python",  # the fast input and inference paths decode and resize with it
        "tqdm",
        "py7zr",  # unpacks Kaggle's train.7z / test.7z
    ],
    extras_require={
        "cpu": ["mxnet==1.9.1"],
        "gpu": ["mxnet-cu112==1.9.1"],
        "test": ["pytest", "nbclient", "ipykernel", "tensorboardX"],
        "tensorboard": ["tensorboardX"],  # train --tensorboard
        # `python -m gluon_cifar.export --onnx`: MXNet 1.9.1's exporter uses onnx.mapping, gone in 1.16
        "onnx": ["onnx<1.16"],
    },
)
