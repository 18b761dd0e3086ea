"""Classify a folder of `<id>.png` images with ONNX Runtime alone (no MXNet, no gluon_cifar); write id,label CSV.

    python examples/onnx_predict.py --model out/model.onnx --images DIR/test --output submission.csv

Needs only onnxruntime, numpy and Pillow (examples/requirements-onnx.txt). The model comes from
`python -m gluon_cifar.export --model out/model --onnx`; its class names are read from
`out/model-classes.json` beside it. Preprocessing is the chapter's test transform (ToTensor, Normalize).
"""
import argparse
import csv
import json
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from PIL import Image

# CIFAR10_MEAN and CIFAR10_STD of gluon_cifar/data.py (the chapter's values), restated because this
# script must run where the package cannot be installed. Keep them equal to those.
MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.2023, 0.1994, 0.2010], dtype=np.float32).reshape(3, 1, 1)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def list_images(folder):
    """[(id, path)] of the `<id>.png` files in `folder`, in numeric id order (hidden files ignored)."""
    if not os.path.isdir(folder):
        sys.exit(f"error: {folder}: folder not found")
    images = []
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if name.startswith("."):
            continue
        if ext.lower() not in IMAGE_EXTENSIONS or not stem.isdigit():
            sys.exit(f"error: {os.path.join(folder, name)}: not an image named <id>.png")
        images.append((int(stem), os.path.join(folder, name)))
    if not images:
        sys.exit(f"error: {folder}: no images")
    return sorted(images)


def preprocess(path):
    """32x32 RGB image -> float32 CHW in [0, 1] (ToTensor) -> (x - mean) / std (Normalize).

    Images of another size are resized bilinearly by Pillow, which differs slightly from MXNet's
    resize in `gluon_cifar.predict`; 32x32 images (all of CIFAR-10) are used exactly as they are.
    """
    try:
        img = Image.open(path).convert("RGB")
    except OSError:
        sys.exit(f"error: {path}: cannot decode image (corrupt or not an image)")
    if img.size != (32, 32):
        img = img.resize((32, 32), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255
    return (x - MEAN) / STD


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.onnx (class names in model-classes.json)")
    parser.add_argument("--images", required=True, help="folder of <id>.png images")
    parser.add_argument("--output", default="submission.csv", help="CSV to write (id,label)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    classes_file = os.path.splitext(args.model)[0] + "-classes.json"
    for path in (args.model, classes_file):
        if not os.path.isfile(path):
            sys.exit(f"error: {path}: file not found")
    with open(classes_file) as f:
        classes = json.load(f)
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    images = list_images(args.images)
    rows = []
    for start in range(0, len(images), args.batch_size):
        batch = images[start:start + args.batch_size]
        X = np.stack([preprocess(path) for _, path in batch])
        logits = session.run(None, {input_name: X})[0]
        rows.extend((image_id, classes[k]) for (image_id, _), k in zip(batch, logits.argmax(axis=1)))

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.output)), suffix=".tmp")
    try:  # written whole under a temporary name, then renamed: never half a file
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["id", "label"])
            writer.writerows(rows)
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {args.output}: {len(rows)} predictions")


if __name__ == "__main__":
    main()
