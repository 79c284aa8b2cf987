"""PyTorch baseline for bench/train_step.py: one episodic training step of Conv-4 FRN or ProtoNet, the
same computation as the official FRN code (Conv-4 of 4 x conv3x3-BN-ReLU-maxpool with 64 channels, the
FRN ridge head in its d x d form, the auxiliary loss, NLL, SGD with momentum 0.9, Nesterov and weight
decay 5e-4 on every parameter), written from the official code's description for timing only.

torch is imported here and nowhere in the product. bench/train_step.py runs it in the same command
as the Paddle step so that both see the same machine; alone:
    pip install torch==2.13.0   # a CPU wheel; for this benchmark only
    python bench/torch_step.py --method frn --way 20 --shot 5 --query 15 --steps 5
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


class Episodic(nn.Module):
    """Backbone plus the FRN head (`frn`) or a prototype head (`proto`), with its learned scale."""

    def __init__(self, method: str):
        super().__init__()
        self.method = method
        self.backbone = conv4()
        self.scale = nn.Parameter(torch.ones(1))
        self.r = nn.Parameter(torch.zeros(2))  # alpha, beta

    def loss(self, images: torch.Tensor, way: int, shot: int, query: int) -> torch.Tensor:
        """NLL of the episode (class-major support then queries) plus FRN's auxiliary loss."""
        f = self.backbone(images)  # [N, 64, 5, 5]
        n_s = way * shot
        if self.method == "proto":
            flat = f.flatten(1)
            protos = flat[:n_s].view(way, shot, -1).mean(1)
            dist = torch.cdist(flat[n_s:], protos).pow(2) / flat.shape[1]
            logits = -dist * self.scale
            aux = 0.0
        else:
            d = f.shape[1]
            f = f.flatten(2).transpose(1, 2)  # [N, 25, d]
            s = f[:n_s].reshape(way, shot * 25, d)
            q = f[n_s:].reshape(-1, d)
            lam = shot * 25 / d * self.r[0].exp() + 1e-6
            rho = self.r[1].exp()
            sts = s.transpose(1, 2) @ s
            hat = torch.linalg.inv(sts + lam * torch.eye(d).unsqueeze(0)) @ sts
            q_bar = (q.unsqueeze(0) @ hat) * rho
            dist = (q_bar - q.unsqueeze(0)).pow(2).sum(2).t()  # [n_q*25, way]
            logits = -dist.view(-1, 25, way).mean(1) * self.scale
            sn = s / s.norm()
            i, j = torch.tril_indices(way, way, -1)
            aux = (sn[i] @ sn[j].transpose(1, 2)).pow(2).sum() * 0.03
        labels = torch.arange(way).repeat_interleave(query)
        return F.nll_loss(F.log_softmax(logits, 1), labels) + aux


def main() -> None:
    """Time `--steps` training steps after `--warmup` untimed ones and print the rate."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=["frn", "proto"], default="frn")
    ap.add_argument("--way", type=int, default=20)
    ap.add_argument("--shot", type=int, default=5)
    ap.add_argument("--query", type=int, default=15)
    ap.add_argument("--size", type=int, default=84)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = Episodic(args.method).train()
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
    print(f"torch {args.method} {episode}: {rate:.3f} steps/s ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
