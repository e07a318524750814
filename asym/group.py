"""Run groups: the runs of one model that differ only in their lr multiplier, trained as ONE network.

Members of a group share model, dataset, clamp, procedure and seed, so they start from the same
weights, draw the same feedback and see the same batches (the data order comes from the seed); only
their learning rates differ. The group network is the member network N times side by side:

- the first layer (its input is shared) is one conv/FC with N×C_out outputs;
- every later conv is a grouped convolution (groups = N); FC layers are batched matmuls;
- BN over N×C channels is exactly per-member BN; ReLU and pooling act per channel;
- the asymmetric backward is the same one ``convolution_backward`` with V stacked per member;
- Batch Manhattan runs on the stacked parameters, each member's block with its own lr.

A member's NaN stays in its own channels (grouped convs and per-channel BN never mix members), so a
member diverges alone. Every member keeps its own history and result; the group checkpoint holds them all.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .data import TensorData
from .models import PaperBatchNorm, build_network, parse_model
from .nn import AsymConv2dFunction, AsymLinear, _AsymMixin
from .optim import BatchManhattan
from .train import EVAL_BATCH, Protocol, RunSpec, TrainingState, calibrate_batchnorm, make_result, write_json


def group_key(run: RunSpec) -> tuple:
    """Runs with equal keys can train as one group: everything but the lr multiplier."""
    return (parse_model(run.model).label, run.dataset, run.freeze, run.procedure, run.seed)


class GroupLinearFunction(torch.autograd.Function):
    """N linear layers side by side on (B, N·in) → (B, N·out): batched matmuls; dL/dx through each V_i."""

    @staticmethod
    def forward(input, weight, bias, feedback, shared_input):
        n, out_f, in_f = weight.shape
        x = input.unsqueeze(0).expand(n, -1, -1) if shared_input else input.view(len(input), n, in_f).transpose(0, 1)
        y = torch.bmm(x, weight.transpose(1, 2)) if bias is None else \
            torch.baddbmm(bias.view(n, 1, out_f), x, weight.transpose(1, 2))
        return y.transpose(0, 1).reshape(len(input), n * out_f)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, feedback, shared_input = inputs
        ctx.save_for_backward(input, feedback)
        ctx.shape, ctx.has_bias, ctx.shared_input = weight.shape, bias is not None, shared_input

    @staticmethod
    def backward(ctx, grad_output):
        input, feedback = ctx.saved_tensors
        n, out_f, in_f = ctx.shape
        g = grad_output.view(len(grad_output), n, out_f).transpose(0, 1)                      # (N, B, out)
        x = input.unsqueeze(0).expand(n, -1, -1) if ctx.shared_input else input.view(len(input), n, in_f).transpose(0, 1)
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.bmm(g, feedback.to(g.dtype)).transpose(0, 1).reshape(input.shape)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(g.transpose(1, 2), x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = g.sum(1).reshape(-1)
        return grad_input, grad_weight, grad_bias, None, None


class _Stacked(nn.Module):
    """N copies of one asymmetric layer's parameters, stacked along dim 0 (member k's block is k-th)."""

    def __init__(self, member: _AsymMixin, n: int, weight: torch.Tensor, shared_input: bool):
        super().__init__()
        self.n, self.member_shape, self.shared_input = n, tuple(member.weight.shape), shared_input
        self.weight = nn.Parameter(weight, requires_grad=member.weight.requires_grad)
        self.bias = None if member.bias is None else nn.Parameter(
            member.bias.detach().repeat(n), requires_grad=member.bias.requires_grad)
        self.feedback_spec, self.feedback = member.feedback_spec, copy.deepcopy(member.feedback)

    def feedback_matrix(self) -> torch.Tensor:
        """V of every member, stacked: one draw per step (as each member alone), applied to each W_i."""
        w = self.weight.detach()
        if self.feedback_spec.mode == "bp":
            return w
        blocks = w.reshape(self.n, *self.member_shape)
        first = self.feedback(blocks[0])  # batchwise modes draw here, in training mode
        training = self.feedback.training
        self.feedback.eval()  # the other members reuse that draw
        rest = [self.feedback(b) for b in blocks[1:]]
        self.feedback.train(training)
        return torch.stack([first, *rest]).reshape(w.shape)


class GroupConv2d(_Stacked):
    """N convolutions as one: (B, C_in) shared input → N·C_out outputs, else grouped with groups = N."""

    def __init__(self, member, n: int, shared_input: bool):
        super().__init__(member, n, member.weight.detach().repeat(n, 1, 1, 1), shared_input)
        self.stride, self.padding = list(member.stride), list(member.padding)

    def forward(self, x):
        return AsymConv2dFunction.apply(x, self.weight, self.bias, self.feedback_matrix(), self.stride,
                                        self.padding, [1, 1], 1 if self.shared_input else self.n)


class GroupLinear(_Stacked):
    """N linear layers as batched matmuls on (B, N·features) tensors."""

    def __init__(self, member, n: int, shared_input: bool):
        super().__init__(member, n, member.weight.detach().repeat(n, 1, 1), shared_input)

    def forward(self, x):
        return GroupLinearFunction.apply(x, self.weight, self.bias, self.feedback_matrix(), self.shared_input)


def widen(member: nn.Sequential, n: int) -> nn.Sequential:
    """The group network of N copies of ``member`` (a ``build_network`` Sequential). Output: (B, N·classes).

    Activations keep the members side by side in the channel/feature dimension, each member's block
    contiguous, so nn.Flatten of (B, N·C, H, W) gives N blocks of C·H·W in the member's own order.
    """
    layers, first = [], True
    for m in member:
        if isinstance(m, _AsymMixin):
            layers.append((GroupLinear if isinstance(m, AsymLinear) else GroupConv2d)(m, n, shared_input=first))
            first = False
        elif isinstance(m, PaperBatchNorm):
            bn = PaperBatchNorm(n * m.running_mean.numel(), affine=m.weight is not None, eps=m.eps, alpha=m.alpha)
            bn.load_state_dict({k: v.repeat(n) if v.dim() else v for k, v in m.state_dict().items()})
            for p_group, p in zip(bn.parameters(), m.parameters()):
                p_group.requires_grad_(p.requires_grad)
            layers.append(bn)
        else:
            layers.append(copy.deepcopy(m))
    return nn.Sequential(*layers).to(member[0].weight.device, member[0].weight.dtype)


class GroupBatchManhattan(BatchManhattan):
    """Batch Manhattan on stacked parameters: the direction τ does not depend on lr, so each member's block
    takes ``w_i += lr_i·τ_i`` with the same kernel a member alone would use."""

    def __init__(self, params, lrs: list[float], **kw):
        super().__init__(params, lr=0.0, **kw)
        self.lrs = list(lrs)

    def _update(self, params, step, lr):
        n = len(self.lrs)
        for i, lr_i in enumerate(self.lrs):
            torch._foreach_add_([p.view(n, -1)[i] for p in params], [s.view(n, -1)[i] for s in step], alpha=lr_i)


@dataclass
class GroupState(TrainingState):
    """A group checkpoint: the stacked net and optimizer, and each member's history and status."""

    histories: list[list[dict]] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    BOOKKEEPING: ClassVar[tuple[str, ...]] = ("epoch", "histories", "statuses")


def new_group_state(runs: list[RunSpec], proto: Protocol, data: TensorData, device) -> GroupState:
    lead = runs[0]
    spec = parse_model(lead.model)
    in_features = data.x_train.shape[1] if data.x_train.dim() == 2 else None
    member = build_network(data.arch, data.num_classes, spec, lead.freeze, lead.seed, in_features).to(device)
    net = widen(member, len(runs))
    params = [p for p in net.parameters() if p.requires_grad]
    opt = GroupBatchManhattan(params, [proto.lr(1, r.lr_mult) for r in runs], momentum=proto.momentum,
                              weight_decay=proto.weight_decay, setting=spec.setting)
    return GroupState(net, opt, torch.Generator().manual_seed(lead.seed),
                      histories=[[] for _ in runs], statuses=["running"] * len(runs))


def member_logits(net: nn.Module, x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N, classes)."""
    out = net(x)
    return out.reshape(out.shape[0], n, -1)


@torch.no_grad()
def evaluate_members(net: nn.Module, x, y, n: int) -> list[float]:
    """Error in percent of every member on (x, y)."""
    net.eval()
    wrong = torch.zeros(n, dtype=torch.long, device=y.device)
    for i in range(0, len(y), EVAL_BATCH):
        wrong += (member_logits(net, x[i:i + EVAL_BATCH], n).argmax(2) != y[i:i + EVAL_BATCH, None]).sum(0)
    return [100.0 * int(w) / len(y) for w in wrong]


def run_group_epoch(state: GroupState, data: TensorData, runs: list[RunSpec], proto: Protocol) -> list[dict]:
    """One epoch for every member at once; one record per member (val_error None for a diverged one)."""
    n, epoch = len(runs), state.epoch + 1
    lrs = [proto.lr(epoch, r.lr_mult) for r in runs]
    state.optimizer.lrs = lrs
    bs = proto.batch_size_at(epoch, runs[0].procedure)
    size = len(data.y_train)
    order = torch.randperm(size, generator=state.data_rng).to(data.x_train.device)
    state.net.train()
    loss_sum = torch.zeros(n, device=data.x_train.device, dtype=data.x_train.dtype)
    wrong = torch.zeros(n, dtype=torch.long, device=data.x_train.device)
    for i in range(0, size, bs):
        idx = order[i:i + bs]
        x, y = data.x_train[idx], data.y_train[idx]
        out = member_logits(state.net, x, n)
        losses = F.cross_entropy(out.transpose(1, 2), y[:, None].expand(-1, n), reduction="none").mean(0)
        state.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # member i's gradient is that of its own batch-mean loss
        state.optimizer.step()
        loss_sum += losses.detach() * len(y)
        wrong += (out.argmax(2) != y[:, None]).sum(0)
    records = [{"epoch": epoch, "train_loss": float(loss_sum[k]) / size, "train_error": 100.0 * int(wrong[k]) / size,
                "lr": lrs[k], "batch_size": bs} for k in range(n)]
    alive = [k for k in range(n) if state.statuses[k] == "running" and math.isfinite(records[k]["train_loss"])]
    if alive:
        calibrate_batchnorm(state.net, data.x_train, state.data_rng, proto)
        errors = evaluate_members(state.net, data.x_test, data.y_test, n)
    for k in range(n):
        records[k]["val_error"] = errors[k] if k in alive else None
    return records


def train_group(runs: list[RunSpec], data: TensorData, group_dir: str | Path, out_dirs: list[Path],
                proto: Protocol | None = None, device: str | torch.device = "cpu",
                on_epoch: Callable[[int, dict], None] | None = None, config: dict | None = None) -> list[dict]:
    """Train the members of one group together, resuming from ``group_dir/checkpoint.pt``.

    ``on_epoch(k, record)`` sees member k's epochs. Each member's ``result.json`` goes to ``out_dirs[k]``,
    exactly as ``train_run`` would write it; the results are returned in member order.
    """
    for r in runs:
        r.validate()
    if len({group_key(r) for r in runs}) != 1:
        raise ValueError("a group's runs must differ only in lr_mult")
    proto, n = proto or Protocol(), len(runs)
    t0 = time.time()
    timings = {"started": t0, "resumed_from_epoch": None, "group_size": n}
    try:
        return _train_group(runs, data, Path(group_dir), out_dirs, proto, torch.device(device), on_epoch, config,
                            timings)
    except Exception as e:  # like a single run: every member leaves a "failed" result.json
        timings["seconds"] = time.time() - t0
        for run, out in zip(runs, out_dirs):
            write_json(Path(out) / "result.json",
                       make_result(run, proto, [], "failed", dict(timings), config, f"{type(e).__name__}: {e}"))
        raise


def _train_group(runs, data, group_dir, out_dirs, proto, device, on_epoch, config, timings) -> list[dict]:
    n, ckpt, t0 = len(runs), group_dir / "checkpoint.pt", timings["started"]
    torch.manual_seed(runs[0].seed)
    data = data.to(device)
    state = new_group_state(runs, proto, data, device)
    timings["resumed_from_epoch"] = state.resume_from(ckpt, device)
    if not state.histories[0]:  # epoch 0: the untrained net counts (GUIDE item 7)
        calibrate_batchnorm(state.net, data.x_train, state.data_rng, proto)
        for k, err in enumerate(evaluate_members(state.net, data.x_test, data.y_test, n)):
            state.histories[k].append({"epoch": 0, "val_error": err, "lr": proto.lr(1, runs[k].lr_mult)})
        state.save(ckpt)
        for k in range(n):
            if on_epoch:
                on_epoch(k, state.histories[k][0])
    while "running" in state.statuses and state.epoch < proto.epochs:
        records = run_group_epoch(state, data, runs, proto)
        state.epoch += 1
        fresh = []
        for k, rec in enumerate(records):
            if state.statuses[k] != "running":
                continue  # diverged earlier: its history ended there
            state.histories[k].append(rec)
            fresh.append(k)
            if rec["val_error"] is None:
                state.statuses[k] = "diverged"
        state.save(ckpt)
        for k in fresh:
            if on_epoch:
                on_epoch(k, state.histories[k][-1])
    timings["seconds"] = time.time() - t0
    results = []
    for k, run in enumerate(runs):
        status = "finished" if state.statuses[k] == "running" else state.statuses[k]
        result = make_result(run, proto, state.histories[k], status, dict(timings), config)
        write_json(Path(out_dirs[k]) / "result.json", result)
        results.append(result)
    return results
