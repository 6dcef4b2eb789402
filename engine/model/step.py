"""One step of truncated backprop through time, and the per-step log kept on the device."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from charrnn_tui.engine.model.device import autocast
from charrnn_tui.engine.model.model import CharRNN, State, detach_state
from charrnn_tui.engine.text.data import Batch


class StepLog:
    """Loss and gradient norm of each step since the last read, kept on the device so that the
    training loop never waits for them; `read` is the one host sync per progress report."""

    def __init__(self, device: torch.device, capacity: int = 4096):
        self.values = torch.empty(capacity, 2, device=device)
        self.count = 0

    @property
    def full(self) -> bool:
        return self.count == len(self.values)

    def record(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.values[self.count, 0] = loss
        self.values[self.count, 1] = grad_norm
        self.count += 1

    def add_up_losses(self, sum_: Callable[[torch.Tensor], None]) -> None:
        """Replace each recorded loss by its sum over the run's processes (`sum_` all-reduces in
        place): each rank logs its share of the global batch's mean."""
        losses = self.values[: self.count, 0].contiguous()
        sum_(losses)
        self.values[: self.count, 0] = losses

    def read(self) -> tuple[list[float], list[float]]:
        """The losses and gradient norms recorded since the last read, oldest first."""
        losses, grad_norms = self.values[: self.count].T.tolist() if self.count else ([], [])
        self.count = 0
        return losses, grad_norms


def clip_gradients(model: CharRNN, max_norm: float) -> torch.Tensor:
    """Scale the gradients to a global norm of at most `max_norm` (0: leave them) and return their
    norm before that, as a tensor on the device: nothing here waits for the device."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=True)


class TrainStep:
    """Forward, backward, clip and update on one batch, from a carried state."""

    def __init__(self, model: CharRNN, optimizer: torch.optim.Optimizer, device: torch.device, *, bf16: bool,
                 grad_clip: float):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.bf16, self.grad_clip = bf16, grad_clip
        self.log = StepLog(device)
        self.updating = False  # inside the optimizer's update: a failure now leaves the weights half-done
        self.forward: torch.nn.Module = model  # the DDP wrapper in a distributed run
        self.world_size = 1

    def distribute(self, ddp_model: torch.nn.Module, world_size: int) -> None:
        """Train through DDP from now on: its backward averages the gradients over the processes."""
        self.forward, self.world_size = ddp_model, world_size

    def loss(self, x: torch.Tensor, y: torch.Tensor, state: State | None,
             predictions: int | None = None) -> tuple[torch.Tensor, State]:
        """Mean cross-entropy over the scored targets (in fp32 whatever the autocast), and the state
        after the batch (fp32: on CUDA the model runs its recurrent layers outside this autocast,
        engine/model/device.py says why). With `predictions` (a distributed run's global count of scored targets):
        this rank's summed loss over it, times the number of processes, which DDP's averaging of
        gradients divides out, so the update is one process's over the whole batch however
        unevenly padding falls."""
        with autocast(self.device, self.bf16):
            logits, state = self.forward(x, state)
        flat = logits.float().flatten(0, 1)
        if predictions is None:
            return F.cross_entropy(flat, y.flatten()), state
        return F.cross_entropy(flat, y.flatten(), reduction="sum") * (self.world_size / predictions), state

    def __call__(self, batch: Batch, state: State | None, lr: float) -> State:
        """Train on `batch` from `state` (None: zeros); the state after it, cut from the graph. In a
        distributed run `batch` is this rank's streams and `batch.predictions` the global count."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, state = self.loss(batch.x, batch.y, state, batch.predictions if self.world_size > 1 else None)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Kept with the loss: a non-finite norm means this update made the weights non-finite,
        # even when the loss that produced it was finite.
        grad_norm = clip_gradients(self.model, self.grad_clip)
        self.updating = True
        self.optimizer.step()
        self.updating = False
        share = loss.detach() if self.world_size == 1 else loss.detach() / self.world_size  # summed at reports
        self.log.record(share, grad_norm)
        return detach_state(state)
