"""PyTorch eager baseline rows: the chapter's ResNet-18 (same layers and shapes), batch 128, CPU.

Run by benchmarks/run.py with the benchmark environment's Python (the package never depends on torch):
`python benchmarks/torch_rows.py --threads 2 --steps 5 --batches 5` prints one JSON object of
per-step/per-batch seconds. Needs only torch (no NumPy): inputs are random tensors, as in the MXNet rows.
"""
import argparse
import json
import time

import torch
from torch import nn


class Residual(nn.Module):
    """The chapter's `Residual`: two 3x3 convolutions with BatchNorm, 1x1 convolution shortcut on a shape change."""

    def __init__(self, in_channels, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, num_channels, 3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, 3, padding=1)
        self.conv3 = nn.Conv2d(in_channels, num_channels, 1, stride=strides) if use_1x1conv else None
        self.bn1, self.bn2 = nn.BatchNorm2d(num_channels), nn.BatchNorm2d(num_channels)

    def forward(self, X):
        Y = torch.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3 is not None:
            X = self.conv3(X)
        return torch.relu(Y + X)


def resnet18(num_classes=10):
    layers = [nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU()]
    channels = 64
    for i, out in enumerate((64, 128, 256, 512)):
        first = i == 0
        layers += [Residual(channels, out, use_1x1conv=not first, strides=1 if first else 2), Residual(out, out)]
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


def timed(fn, count, warmup=2):
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--train-batch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128, help="inference batch size")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = resnet18()
    X, y = torch.randn(args.train_batch_size, 3, 32, 32), torch.randint(0, 10, (args.train_batch_size,))
    trainer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    loss = nn.CrossEntropyLoss()

    def train_step():
        trainer.zero_grad()
        l = loss(net(X), y)
        l.backward()
        trainer.step()
        l.item()

    net.train()
    train = timed(train_step, args.steps)
    net.eval()
    with torch.no_grad():
        X = torch.randn(args.batch_size, 3, 32, 32)
        infer = timed(lambda: net(X).argmax(1).tolist(), args.batches)
    print(json.dumps({"version": torch.__version__, "threads": args.threads, "train_batch_size": args.train_batch_size,
                      "batch_size": args.batch_size,
                      "train_step_seconds": train, "inference_batch_seconds": infer}))


if __name__ == "__main__":
    main()
