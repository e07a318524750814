"""The engine: N ≥ 1 runs that differ only in their lr multiplier, trained as one network.

N = 1 is an ordinary run on the plain Table 1 network. N > 1 is the HFTA-style widened network of
``asym.group`` (grouped convs, batched-matmul FC, BN over N·C channels), where the members start from the
same weights, draw the same feedback and see the same batches. Either way the protocol loop
(``asym.train``) sees the same few operations, on per-member tensors of shape (N,):
``set_lrs``, ``train_step``, ``evaluate``, ``calibrate_batchnorm`` and ``state_dict``/``load_state_dict``.

Execution options: ``Protocol.amp`` (bf16/fp16) runs forward and loss in ``torch.autocast`` on the data's
device type, fp16 with a ``torch.amp.GradScaler`` (it changes the numbers, so it is part of the protocol);
``compile=True`` trains through ``torch.compile(net)`` (the same numbers within float tolerance).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import TensorData
from .group import GroupBatchManhattan, widen
from .models import batchnorm_layers, build_network, parse_model
from .protocol import FP16_GROUP_ERROR, Protocol, RunSpec, batch_bounds

EVAL_BATCH = 1000
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # Protocol.amp → autocast's dtype


@torch.no_grad()
def calibrate_batchnorm(net: nn.Module, x_train: torch.Tensor, rng: torch.Generator, proto: Protocol) -> None:
    """Forward ``bn_batches`` training batches, EMA of batch mean/std from the first: protocol decision 4
    (docs/protocol.md). The batches are the first of one pass's mini-batches (``batch_bounds``: a last batch of one
    joins the one before it, protocol decision 14)."""
    bns = batchnorm_layers(net)
    if not bns:
        return
    net.eval()  # eval: batchwise feedback must not redraw; the BN layers use batch statistics
    for bn in bns:
        bn.reset_statistics()
        bn.alpha, bn.calibrating = proto.bn_alpha, True
    order = torch.randperm(len(x_train), generator=rng).to(x_train.device)
    for start, stop in batch_bounds(len(x_train), proto.batch_size)[:proto.bn_batches]:
        net(x_train[order[start:stop]])
    for bn in bns:
        bn.calibrating = False


class Engine:
    """Network, optimizer and data order of a job of ``runs`` (N ≥ 1, equal ``RunSpec.group_key``).

    Raises ValueError if the runs differ in anything but ``lr_mult``, or for ``amp=fp16`` with N > 1 (the
    GradScaler skips a step for all members when one overflows, so a diverged member would stop the others).
    Weights and feedback come from the lead run's seed (``build_network``), the data order from a generator
    seeded with it. ``compile``: forward (and its backward) through ``torch.compile``, default backend.
    """

    def __init__(self, runs: list[RunSpec], proto: Protocol, data: TensorData, device: torch.device,
                 compile: bool = False):
        if len({r.group_key() for r in runs}) != 1:
            raise ValueError("a group's runs must differ only in lr_mult")
        if proto.amp == "fp16" and len(runs) > 1:
            raise ValueError(FP16_GROUP_ERROR)
        lead, self.n = runs[0], len(runs)
        spec = parse_model(lead.model)
        in_features = data.x_train.shape[1] if data.x_train.dim() == 2 else None
        net = build_network(data.arch, data.num_classes, spec, lead.freeze, lead.seed, in_features).to(device)
        self.net = net if self.n == 1 else widen(net, self.n)  # N = 1: the plain network, today's cost
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = GroupBatchManhattan(params, [proto.lr(1, r.lr_mult) for r in runs], momentum=proto.momentum,
                                             weight_decay=proto.weight_decay, setting=spec.setting)
        self.data_rng = torch.Generator().manual_seed(lead.seed)
        self.amp, self.device_type = proto.amp, torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=proto.amp == "fp16")  # disabled: a no-op
        if compile:  # a new job's network: earlier jobs' compiled code in this process (runs_per_task) would count
            torch.compiler.reset()  # towards dynamo's per-code recompile limit, past which it silently runs eager
        self.forward = torch.compile(self.net) if compile else self.net  # shares self.net's parameters

    def autocast(self):
        """``torch.autocast`` for ``Protocol.amp`` on the data's device type; amp=none: a disabled one."""
        return torch.autocast(self.device_type, dtype=AMP_DTYPES.get(self.amp, torch.bfloat16),
                              enabled=self.amp != "none")

    def set_lrs(self, lrs: list[float]) -> None:
        """Member k's learning rate for the next steps."""
        self.optimizer.lrs = list(lrs)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, classes)."""
        out = self.forward(x)
        return out.reshape(out.shape[0], self.n, -1)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One mini-batch: forward, backward of each member's batch-mean loss, update.

        Returns per-member (loss summed over the batch, wrong predictions), shape (N,), on the device.
        """
        with self.autocast():
            out = self.logits(x)
            if self.n == 1:  # F.cross_entropy's own mean: a plain run's numbers, bit for bit
                losses = F.cross_entropy(out[:, 0], y)[None]
            else:
                losses = F.cross_entropy(out.transpose(1, 2), y[:, None].expand(-1, self.n), reduction="none").mean(0)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses.sum()).backward()  # member k's gradient is that of its own batch-mean loss
        self.scaler.step(self.optimizer)  # fp16: unscales the gradients, skips the step if any is inf/NaN
        self.scaler.update()
        return losses.detach() * len(y), (out.argmax(2) != y[:, None]).sum(0)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """Every member's error on (x, y), in percent."""
        self.net.eval()
        wrong = torch.zeros(self.n, dtype=torch.long, device=y.device)
        for i in range(0, len(y), EVAL_BATCH):
            with self.autocast():
                wrong += (self.logits(x[i:i + EVAL_BATCH]).argmax(2) != y[i:i + EVAL_BATCH, None]).sum(0)
        return [100.0 * int(w) / len(y) for w in wrong]

    def calibrate_batchnorm(self, x_train: torch.Tensor, proto: Protocol) -> None:
        with self.autocast():  # eager: the statistics of the forward the evaluation runs
            calibrate_batchnorm(self.net, x_train, self.data_rng, proto)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "data_rng": self.data_rng.get_state(), "torch_rng": torch.get_rng_state(),
                "scaler": self.scaler.state_dict()}  # fp16: the loss scale and its growth tracker

    def load_state_dict(self, d: dict) -> None:
        """``d`` as loaded to the CPU: RNG states must stay CPU byte tensors; tensors move to the net's device."""
        self.net.load_state_dict(d["net"])
        self.optimizer.load_state_dict(d["optimizer"])
        self.data_rng.set_state(d["data_rng"])
        torch.set_rng_state(d["torch_rng"])
        if d.get("scaler"):  # empty when saved without fp16
            self.scaler.load_state_dict(d["scaler"])
