"""Install gluon_cifar. MXNet itself comes from an extra: `[cpu]` (mxnet) or `[gpu]` (mxnet-cu112).

NumPy follows the interpreter: 1.23.5 on Python <= 3.11 (d2l 1.0.3's pin; MXNet 1.9.1 runs on it
unchanged), NumPy 2 on 3.12 and 3.13 (no 1.23.5 wheels there; `gluon_cifar.numpy_compat` restores the
names MXNet reads). On 3.12+ pip cannot resolve mxnet (which pins numpy<2) or d2l (numpy==1.23.5), so
they are installed without their pins from requirements-nodeps.txt (`make` does it), and their real
runtime needs are listed here instead.
"""
import os

from setuptools import find_packages, setup

# OpenCV: the package only decodes and resizes (no windows), so it needs the headless build, and that is what it
# requires; pip keeps an opencv-python-headless that is already installed. Its other builds (opencv-python with the
# GUI, opencv-contrib-python[-headless]) are other distributions writing the same cv2/ folder: pip cannot be told
# that any one will do, and a check here of which is installed sees nothing, because pip runs this file in an
# isolated build environment (tried with pip 23.2.1 and 26.3: importlib.metadata found no OpenCV beside an installed
# one). So the choice is explicit: GLUON_CIFAR_OPENCV=<the build you have> requires that one instead (docs/install.md).
OPENCV_BUILDS = ("opencv-python-headless", "opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless")
OPENCV = os.environ.get("GLUON_CIFAR_OPENCV", "").strip() or OPENCV_BUILDS[0]
if OPENCV not in OPENCV_BUILDS:
    raise SystemExit(f"GLUON_CIFAR_OPENCV={OPENCV!r}: expected one of {', '.join(OPENCV_BUILDS)}")

OLD = "python_version < '3.12'"  # the pinned stack: NumPy 1.23.5, d2l and mxnet with their own pins
NEW = "python_version >= '3.12'"  # NumPy 2; mxnet and d2l from requirements-nodeps.txt, --no-deps

setup(
    name="gluon_cifar",
    version="0.1.0",
    description="The d2l Kaggle CIFAR-10 chapter (MXNet/Gluon) as an installable, tested package",
    packages=find_packages(include=["gluon_cifar", "gluon_cifar.*"]),
    package_data={"gluon_cifar.data": ["demo_sample.zip"]},  # the offline demo (gluon_cifar.data.sources.bundled_sample)
    python_requires=">=3.8,<3.14",
    install_requires=[
        f"numpy==1.23.5; {OLD}",  # MXNet 1.9.1 uses np.bool (removed in 1.24); d2l 1.0.3 pins the same
        f"numpy>=2.1,<2.6; {NEW}",  # 2.1 is the first with 3.13 wheels; tested up to 2.5.5
        "pandas",
        f"d2l==1.0.3; {OLD}",
        "matplotlib",
        "Pillow",  # decodes every image once at reorganisation, to reject corrupt files early
        OPENCV,  # decodes (images.py: reorganisation, predict --fast) and resizes (train --fast-data); see above
        "tqdm",
        "py7zr",  # unpacks Kaggle's train.7z / test.7z
        # What mxnet and d2l (installed --no-deps on 3.12+) need at run time, less what is listed above.
        f"requests; {NEW}",  # both
        f"setuptools; {NEW}",  # mxnet imports distutils.version, which Python 3.12 dropped
        f"ipython; {NEW}",  # d2l: IPython.display
        f"matplotlib-inline; {NEW}",  # d2l: backend_inline
        f"scipy; {NEW}",
        f"jupyter; {NEW}",  # d2l pins it; the notebook needs it
    ],
    extras_require={
        "cpu": [f"mxnet==1.9.1; {OLD}", f"graphviz>=0.8.1,<0.9; {NEW}"],
        "gpu": [f"mxnet-cu112==1.9.1; {OLD}", f"graphviz>=0.8.1,<0.9; {NEW}"],
        "test": ["pytest>=7.3", "nbclient", "ipykernel", "tensorboardX"],
        "tensorboard": ["tensorboardX"],  # train --tensorboard
        # `python -m gluon_cifar.export --onnx`: its opset 13 needs onnx >= 1.8; MXNet 1.9.1's exporter uses
        # onnx.mapping, gone in 1.16; on 3.12+ (no onnx<1.16 wheel for 3.13)
        # gluon_cifar.numpy_compat.restore_onnx_mapping() restores it, and ONNX Runtime, which needs
        # NumPy >= 1.24, installs beside MXNet.
        "onnx": [f"onnx>=1.8,<1.16; {OLD}", f"onnx>=1.17; {NEW}", f"onnxruntime; {NEW}"],
    },
)
