"""One optimizer step done the same way for every method: backward, gradient sync, clip, step."""

import torch
import torch.distributed as dist


class Stepper:
    """Backward + (data-parallel gradient averaging) + clipping + optimizer step.

    With N workers (torch.distributed initialised by Ray Train) gradients are
    averaged across workers before the step, which is what DDP does, but it
    also works with the double backward of a gradient penalty. With one worker
    it is a plain step: the same code for N = 1.
    """

    def __init__(self, grad_clip: float = 0.0):
        self.grad_clip = grad_clip
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def step(self, loss: torch.Tensor, *optimizers: torch.optim.Optimizer) -> None:
        """Zero, backward, average across workers, clip each optimizer's parameters, step."""
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            params = [p for group in optimizer.param_groups for p in group["params"]
                      if p.grad is not None]
            if self.world > 1:
                for p in params:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad /= self.world
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            optimizer.step()

    def sync_parameters(self, *modules: torch.nn.Module) -> None:
        """Start every worker from rank 0's weights."""
        if self.world > 1:
            for module in modules:
                for tensor in module.state_dict().values():
                    dist.broadcast(tensor, src=0)
