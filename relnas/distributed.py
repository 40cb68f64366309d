"""Data parallelism under ``torchrun``: one config, N processes, the result of one process.

``torchrun --nproc_per_node N -m relnas run ...`` starts N copies of the same run;
:func:`init` joins them (NCCL on CUDA, one GPU per process by ``LOCAL_RANK``; gloo on the
CPU). Every rank builds the same networks from the same seed and draws the same global batch
(same shuffled order, same augmentation and cutout draws), then keeps its consecutive slice of
it (:meth:`Collective.split`, ``torch.tensor_split``: slices differ by at most one example).
``batch_size`` and ``retrain_batch`` stay the global batch, so a config means the same run on
any number of processes and keeps its results folder.

- Gradients: each rank's loss is multiplied by its share ``n_r / B`` of the global batch and
  the gradients are summed over ranks (one ``all_reduce`` of the flattened tensors,
  :meth:`Collective.sum`). The sum is the gradient of the global batch mean, for unequal
  slices too; a term that every rank computes whole (the weight prior, the structural prior)
  is weighted by shares that add up to 1, so it counts once. The search sums the weight
  gradients, the structure (and log A) hypergradients and, at second order, the virtual step
  and the vector ``v`` before the mixed product (``relnas.bilevel``); retraining sums the weight
  gradients after ``backward`` (``relnas.train.supervised_step``). Clipping sees the sums.
- Structure: the same on every rank by construction (same initial theta, same random draws of
  Gamma from the same seed, identical summed hypergradients); checked at the end of a search
  (:meth:`Collective.check_same`).
- BatchNorm: over the global batch (:class:`GlobalBatchNorm`, SyncBatchNorm semantics), so that
  N processes compute what one does. ``torch.nn.SyncBatchNorm`` refuses CPU tensors, so it
  could not be tested here with gloo; this one is plain autograd around an all_reduce of the
  per-channel sums (so double backward, ``hvp="exact"``, passes through it) on either device.
- Files: only rank 0 writes (``relnas.store`` asks :func:`is_main`); a checkpoint is read by
  rank 0 and broadcast to all (:func:`from_main`), so every rank resumes from the same state;
  the results store is written once, by rank 0, under its lock (:func:`on_ranks`).

Evaluation is shared too: each rank evaluates its part of a split, the sums are added
(``relnas.train.evaluate``). Not equal to one process: drop-path (``drop_path`` > 0) draws its
masks per example, so each rank draws for its own slice.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch import distributed as dist


def requested() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes files and reports: rank 0, or the only process."""
    return rank() == 0


def init(device: str) -> None:
    """Join the processes of a torchrun launch (once; nothing outside torchrun). ``device``
    is the config's resolved device: NCCL with one GPU per process on CUDA, gloo on the CPU."""
    if requested() <= 1 or dist.is_initialized():
        return
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")


def local_device(device: str) -> str:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    if world_size() > 1 and device == "cuda":
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def close() -> None:
    """Leave the process group (at the end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def problem(device: str, compile_: bool) -> str | None:
    """Why a config cannot run under this torchrun launch, or None (checked before compute)."""
    if requested() <= 1:
        return None
    if device.startswith("cuda:"):
        return (f"device={device!r}: under torchrun each process takes the GPU of its "
                "LOCAL_RANK; use device='cuda'")
    if compile_:
        return "compile=True is not tested under torchrun (collectives in BatchNorm); leave it off"
    return None


def batch_problem(field: str, batch: int, n: int, what: str) -> str | None:
    """Why ``n`` examples in batches of ``batch`` cannot be split over this launch's processes
    (a batch smaller than their number), or None."""
    size = world_size()
    small = [b for b in (min(batch, n), n % batch) if 0 < b < size]
    if not small:
        return None
    return (f"{field}={batch}: {what} ({n} examples) has a batch of {small[0]}, fewer than the "
            f"{size} processes that share each batch; choose {field} so that every batch has at "
            f"least {size} examples")


# ----------------------------------------------------------------------------- collectives
class Collective:
    """The operations a training step needs across ranks (the default process group)."""

    def __init__(self):
        self.rank, self.size = rank(), world_size()

    def split(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, float]:
        """This rank's consecutive slice of a global batch, and its share ``n_r / B``."""
        if len(y) < self.size:
            raise ValueError(f"a batch of {len(y)} examples cannot be split over {self.size} "
                             "processes; use a larger batch_size / retrain_batch or fewer "
                             "processes")
        x_r, y_r = x.tensor_split(self.size)[self.rank], y.tensor_split(self.size)[self.rank]
        return x_r, y_r, len(y_r) / len(y)

    def sum(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """Each tensor summed over ranks (one all_reduce of them flattened; no autograd)."""
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        return [part.view_as(t) for part, t in
                zip(flat.split([t.numel() for t in tensors]), tensors)]

    def sum_grads(self, params: Iterable[Tensor], report: Tensor) -> Tensor:
        """Sum the ``.grad`` of ``params`` over ranks in place; returns ``report`` summed too."""
        params = [p for p in params if p.grad is not None]  # the same on every rank
        *grads, total = self.sum([p.grad for p in params] + [report.reshape(1)])
        for p, g in zip(params, grads):
            p.grad.copy_(g)
        return total.reshape(())

    def check_same(self, tensors: Iterable[Tensor], what: str) -> None:
        """Raise when ``tensors`` differ between ranks (they must be equal by construction)."""
        flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
        low, high = flat.clone(), flat.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise RuntimeError(f"the {what} differs between processes (largest gap "
                               f"{float((high - low).abs().max()):.3g}); a rank diverged")


def collective() -> Collective | None:
    """The collective operations of a torchrun launch; None in one process (nothing changes)."""
    return Collective() if world_size() > 1 else None


class _AllReduceSum(torch.autograd.Function):
    """``sum_r x_r`` on every rank; the gradient of each input is the sum of the output
    gradients (every output depends on every input alike), itself differentiable."""

    @staticmethod
    def forward(ctx, x):
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return _AllReduceSum.apply(grad)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (all ranks), like
    ``torch.nn.SyncBatchNorm`` (see the module docstring). Same parameters, buffers and state
    dict as the BatchNorm it replaces; in eval mode, or in one process, it is that BatchNorm."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-d input, got {input.dim()}-d")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16 autocast: stats in fp32
        n = xf.numel() // xf.shape[1]
        mean_r = xf.mean(dims)
        m2_r = (xf - _channels(mean_r, x.dim())).pow(2).sum(dims)
        # per channel: sum of x, within-rank squared deviations, n_r * mean_r^2; and n. In
        # float64: the between-rank part sum n_r mean_r^2 - n mean^2 cancels
        local = torch.cat([mean_r * n, m2_r, mean_r.pow(2) * n, xf.new_full((1,), float(n))])
        total = _AllReduceSum.apply(local.double())
        c = x.shape[1]
        count = total[-1].detach()
        mean = total[:c] / count
        var = (total[c:2 * c] + total[2 * c:3 * c] - count * mean.pow(2)).clamp_min(0) / count
        mean, var = mean.to(xf.dtype), var.to(xf.dtype)
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), count)
        out = (xf - _channels(mean, x.dim())) * _channels(torch.rsqrt(var + self.eps), x.dim())
        if self.affine:
            out = out * _channels(self.weight, x.dim()) + _channels(self.bias, x.dim())
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        """As ``torch.nn.BatchNorm`` does: momentum, or a cumulative average (momentum None);
        the running variance unbiased. ``count`` stays on the device (no host sync)."""
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (count / (count - 1.0).clamp_min(1.0)).to(var.dtype)
        self.running_mean.mul_(1 - factor).add_(factor * mean.to(self.running_mean.dtype))
        self.running_var.mul_(1 - factor).add_(factor * unbiased.to(self.running_var.dtype))


def _channels(t: Tensor, dim: int) -> Tensor:
    return t.view(1, -1, *([1] * (dim - 2)))


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by a :class:`GlobalBatchNorm` sharing its
    parameters and buffers; ``module`` itself in one process."""
    if world_size() == 1:
        return module
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        for name, value in [*module.named_parameters(recurse=False),
                            *module.named_buffers(recurse=False)]:
            setattr(new, name, value)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, sync_batchnorm(child))
    return module


# ----------------------------------------------------------------------------- rank 0 decides
def broadcast(obj: Any = None) -> Any:
    """Rank 0's ``obj`` on every rank (pickled)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (a custom ``__init__`` may not), else a RuntimeError."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__} on rank 0: {exc}")


def from_main(read: Callable[[], Any]) -> Any:
    """``read()`` on rank 0 (a file read), its value (or exception) broadcast to every rank."""
    if world_size() == 1:
        return read()
    if is_main():
        try:
            value = ("ok", read())
        except Exception as exc:
            value = ("error", _portable(exc))
    else:
        value = None
    kind, payload = broadcast(value)
    if kind == "error":
        raise payload
    return payload


def on_ranks(stored: Callable[[Callable[[Path, bool], Any]], dict],
             work: Callable[[Path, bool], Any]) -> dict:
    """One run on every rank, stored once: rank 0 calls ``stored(start)``, the single-process
    path (cache, lock, writes), whose ``start(folder, fresh)`` computes ``work(folder, fresh)``
    after telling the other ranks to compute ``work(folder, False)`` with it (rank 0 alone
    clears old checkpoints). Every rank returns rank 0's result or raises its error."""
    if is_main():
        def start(folder: Path, fresh: bool):
            broadcast(("compute", str(folder)))
            return work(folder, fresh)
        try:
            result = stored(start)
        except BaseException as exc:
            broadcast(("error", _portable(exc)))
            raise
        broadcast(("done", result))
        return result
    own = None
    kind, payload = broadcast()
    if kind == "compute":
        try:
            work(Path(payload), False)
        except Exception as exc:  # rank 0 fails the same way (same numbers), or waits for us
            own = exc
        kind, payload = broadcast()
    if kind == "error":
        raise payload
    if own is not None:
        raise own
    return payload
