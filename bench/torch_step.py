"""PyTorch baseline for bench/train_step.py: one episodic training step of FRN or ProtoNet on Conv-4 or
ResNet-12, the same computation as the official FRN code (Conv-4 of 4 x conv3x3-BN-ReLU-maxpool with 64
channels; ResNet-12 of four residual stages of three bias-free conv3x3-BN with LeakyReLU 0.1, a 1x1
conv-BN shortcut and a 2x2 max-pool, 64-160-320-640 channels; the FRN ridge head in its d x d form, as
the official code uses for both backbones, the auxiliary loss, NLL, SGD with momentum 0.9, Nesterov and
weight decay 5e-4 on every parameter), written from the official code's description for timing only.

torch is imported here and nowhere in the product. bench/train_step.py runs it in the same command
as the Paddle step so that both see the same machine; alone:
    pip install torch==2.13.0   # a CPU wheel; for this benchmark only
    python bench/torch_step.py --method frn --way 20 --shot 5 --query 15 --steps 5
    python bench/torch_step.py --method frn --backbone resnet12 --way 5 --steps 2
Last line: `torch <method> <way>w<shot>s<query>q: N.NNN steps/s (T threads)`.
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv4() -> nn.Sequential:
    """The Conv-4 backbone: four conv3x3-BN-ReLU-maxpool blocks of 64 channels."""
    layers, c_in = [], 3
    for _ in range(4):
        layers += [nn.Conv2d(c_in, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c_in = 64
    return nn.Sequential(*layers)


class ResidualStage(nn.Module):
    """One ResNet-12 stage: three conv3x3-BN (LeakyReLU 0.1 between), plus a conv1x1-BN shortcut,
    LeakyReLU after the sum, then a 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        convs = []
        for k in range(3):
            convs += [nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            if k < 2:
                convs.append(nn.LeakyReLU(0.1))
        self.body = nn.Sequential(*convs)
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.leaky_relu(self.body(x) + self.shortcut(x), 0.1), 2)


def resnet12() -> nn.Sequential:
    """ResNet-12 with 64-160-320-640 channels: [N, 640, 5, 5] for 84 px images."""
    widths = [3, 64, 160, 320, 640]
    return nn.Sequential(*(ResidualStage(widths[k], widths[k + 1]) for k in range(4)))


class Episodic(nn.Module):
    """Backbone plus the FRN head (`frn`) or a prototype head (`proto`), with its learned scale."""

    def __init__(self, method: str, backbone: str = "conv4"):
        super().__init__()
        self.method = method
        self.backbone = resnet12() if backbone == "resnet12" else conv4()
        self.scale = nn.Parameter(torch.ones(1))
        self.r = nn.Parameter(torch.zeros(2))  # alpha, beta

    def loss(self, images: torch.Tensor, way: int, shot: int, query: int) -> torch.Tensor:
        """NLL of the episode (class-major support then queries) plus FRN's auxiliary loss."""
        f = self.backbone(images)  # [N, d, 5, 5]
        n_s = way * shot
        if self.method == "proto":
            flat = f.flatten(1)
            protos = flat[:n_s].view(way, shot, -1).mean(1)
            dist = torch.cdist(flat[n_s:], protos).pow(2) / flat.shape[1]
            logits = -dist * self.scale
            aux = 0.0
        else:
            d, r = f.shape[1], f.shape[2] * f.shape[3]
            f = f.flatten(2).transpose(1, 2)  # [N, r, d]
            s = f[:n_s].reshape(way, shot * r, d)
            q = f[n_s:].reshape(-1, d)
            lam = shot * r / d * self.r[0].exp() + 1e-6
            rho = self.r[1].exp()
            sts = s.transpose(1, 2) @ s
            hat = torch.linalg.inv(sts + lam * torch.eye(d).unsqueeze(0)) @ sts
            q_bar = (q.unsqueeze(0) @ hat) * rho
            dist = (q_bar - q.unsqueeze(0)).pow(2).sum(2).t()  # [n_q*r, way]
            logits = -dist.view(-1, r, way).mean(1) * self.scale
            sn = s / s.norm()
            i, j = torch.tril_indices(way, way, -1)
            aux = (sn[i] @ sn[j].transpose(1, 2)).pow(2).sum() * 0.03
        labels = torch.arange(way).repeat_interleave(query)
        return F.nll_loss(F.log_softmax(logits, 1), labels) + aux


def main() -> None:
    """Time `--steps` training steps after `--warmup` untimed ones and print the rate."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=["frn", "proto"], default="frn")
    ap.add_argument("--backbone", choices=["conv4", "resnet12"], default="conv4")
    ap.add_argument("--way", type=int, default=20)
    ap.add_argument("--shot", type=int, default=5)
    ap.add_argument("--query", type=int, default=15)
    ap.add_argument("--size", type=int, default=84)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = Episodic(args.method, args.backbone).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    images = torch.randn(args.way * (args.shot + args.query), 3, args.size, args.size)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            start = time.perf_counter()
        opt.zero_grad()
        model.loss(images, args.way, args.shot, args.query).backward()
        opt.step()
    rate = args.steps / (time.perf_counter() - start)
    episode = f"{args.way}w{args.shot}s{args.query}q"
    print(f"torch {args.method} {args.backbone} {episode}: {rate:.3f} steps/s ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
