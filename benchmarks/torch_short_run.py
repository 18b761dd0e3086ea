"""The PyTorch mirror of a short `--recipe strong` run, validated as benchmarks/short_run_bn.py validates it.

    python benchmarks/torch_short_run.py REORG_DIR [--epochs 1] [--threads 2] [--seed 0]

REORG_DIR is a reorganisation the package built (`train/` and `valid/` class folders). Same images, the
chapter's ResNet-18 (benchmarks/torch_rows.py) with MXNet's Xavier initialisation, reflect-pad-4 crops and
flips, label smoothing 0.1, SGD (momentum 0.9, wd 5e-4) on the one-cycle schedule of `recipes.one_cycle`
(peak 0.2, 30% warm-up, to 0), batch 128 with the last partial batch dropped, BatchNorm momentum 0.1 (MXNet's
0.9). Prints validation loss and accuracy with the running statistics (eval mode), with batch statistics, and
after re-estimating the running statistics on 50 training batches. Needs torch, NumPy and Pillow only.
"""
import argparse
import os

import numpy as np
import torch
from PIL import Image
from torch import nn

from torch_rows import resnet18

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # gluon_cifar.images' CIFAR10_MEAN, CIFAR10_STD


def class_folders(folder):
    """(N, 3, 32, 32) float tensor normalised as the chapter does, and labels by sorted class name."""
    images, labels = [], []
    for label, name in enumerate(sorted(os.listdir(folder))):
        for file in sorted(os.listdir(os.path.join(folder, name))):
            images.append(np.asarray(Image.open(os.path.join(folder, name, file)).convert("RGB")))
            labels.append(label)
    x = torch.tensor(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x, torch.tensor(labels)


def augment(x, generator):
    """Reflect-pad 4, a random 32x32 crop and a random horizontal flip per image."""
    padded = nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    out = torch.empty_like(x)
    for i in range(len(x)):
        top, left = torch.randint(0, 9, (2,), generator=generator).tolist()
        crop = padded[i, :, top:top + 32, left:left + 32]
        out[i] = crop.flip(2) if torch.rand(1, generator=generator).item() < 0.5 else crop
    return out


def one_cycle(update, total, peak=0.2, warmup_frac=0.3):
    """`recipes.one_cycle` (MXNet's PolyScheduler, pwr 1) at update 1, 2, ...: up from 0, then down to 0."""
    warmup = min(round(warmup_frac * total), total - 1)
    if update < warmup:
        return peak * update / warmup
    return peak * (1 - (update - warmup) / (total - warmup))


def evaluate(net, x, y, train_mode=False):
    net.train(train_mode)
    with torch.no_grad():
        losses, correct = [], 0
        for start in range(0, len(x), 128):
            out = net(x[start:start + 128])
            losses.append(nn.functional.cross_entropy(out, y[start:start + 128], reduction="sum"))
            correct += (out.argmax(1) == y[start:start + 128]).sum().item()
    return float(sum(losses)) / len(x), correct / len(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reorg_dir")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    train_x, train_y = class_folders(os.path.join(args.reorg_dir, "train"))
    valid_x, valid_y = class_folders(os.path.join(args.reorg_dir, "valid"))
    net = resnet18(10)
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)  # MXNet's Xavier(): uniform, fan average, magnitude 3
            nn.init.zeros_(module.bias)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9, weight_decay=5e-4)
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    per_epoch = len(train_x) // 128
    total, update = args.epochs * per_epoch, 0
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(train_x), generator=generator)
        for b in range(per_epoch):
            update += 1
            for group in optimizer.param_groups:
                group["lr"] = one_cycle(update, total)
            idx = order[b * 128:(b + 1) * 128]
            optimizer.zero_grad()
            loss(net(augment(train_x[idx], generator)), train_y[idx]).backward()
            optimizer.step()
    print(f"PyTorch {torch.__version__}, {args.epochs} epoch(s) of {per_epoch} updates on {len(train_x)} images; "
          f"{len(valid_x)} validation images")
    rows = {"eval mode (running statistics)": evaluate(net, valid_x, valid_y),
            "batch statistics (training mode)": evaluate(net, valid_x, valid_y, train_mode=True)}
    for b in range(50):  # training-mode passes re-estimate the running statistics (momentum 0.1)
        start = (b * 128) % (len(train_x) - 127)
        evaluate(net, train_x[start:start + 128], train_y[start:start + 128], train_mode=True)
    rows["running statistics re-estimated on 50 training batches"] = evaluate(net, valid_x, valid_y)
    for what, (valid_loss, valid_acc) in rows.items():
        print(f"  {what:<60} loss {valid_loss:9.3f}  acc {valid_acc:.3f}")


if __name__ == "__main__":
    main()
