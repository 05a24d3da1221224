"""FastDropout: inverted dropout whose mask costs a quarter of torch's random draws on CPU."""
from __future__ import annotations

import torch
from torch import nn

_LEVELS = 1 << 16


@torch.library.custom_op("pepnet::uniform_int16", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,))
def uniform_int16(like: torch.Tensor) -> torch.Tensor:
    """int16 [like.shape], uniform on [-32768, 32767]: four per 64-bit draw of torch's generator (``like``'s
    values are not read). An opaque operator to ``torch.compile`` (which would otherwise break its graph at
    ``random_``), so that the compiler fuses what is done with the draws into the neighbouring element-wise work;
    the tensor argument keeps two draws for different tensors from being merged as one common subexpression."""
    n = like.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_(-(1 << 63), None)
    return draws.view(torch.int16)[:n].view(like.shape)


@uniform_int16.register_fake
def _(like: torch.Tensor) -> torch.Tensor:
    return torch.empty(like.shape, dtype=torch.int16, device=like.device)


class FastDropout(nn.Module):
    """x float [...] -> x * keep / (1 - p) in training, x in evaluation (as ``nn.Dropout``).

    ``nn.Dropout`` draws one random double per element (``bernoulli_``, a serial loop on CPU). Here each
    64-bit draw of torch's generator gives four 16-bit integers, and an element is dropped when its integer
    falls in the lowest ``round(p * 65536)`` values: the drop probability is ``p`` rounded to 1/65536 and the
    kept elements are scaled by the exact inverse of the keep probability, so the expectation is unchanged.
    Seeded by ``torch.manual_seed`` like every torch RNG.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1); got {p}")
        self.p = p
        self.dropped = round(p * _LEVELS)                   # how many of the 65536 levels drop an element
        self.scale = _LEVELS / (_LEVELS - self.dropped)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """float [x.shape]: 0 where dropped, ``scale`` where kept (a fresh draw for every call; x's values are not
        read)."""
        levels = uniform_int16(x.detach())
        return (levels >= self.dropped - _LEVELS // 2).to(torch.float32).mul_(self.scale)

    def forward(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """``like`` (optional): a tensor of x's shape already in memory (the pre-activation of ``x = relu(z)``, say),
        whose values are not read: the random draw is made for it rather than for x, so that a compiled graph need
        not write x out for the draw and can fuse x into the product with the mask."""
        if not self.training or self.dropped == 0:
            return x
        return x * self.mask(x if like is None else like).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"
