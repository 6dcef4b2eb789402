"""`--batch-size auto`: the largest batch that fits in accelerator memory, found at start-up."""

from __future__ import annotations

from collections.abc import Callable

import torch

AUTO_BATCH_LIMIT = 1024  # past this an RNN's updates per second fall faster than its batch grows
HEADROOM = 0.9  # evaluation, sampling and allocator fragmentation need room beside a training step


def memory_limited(device: torch.device) -> bool:
    """Whether running out of memory is what limits the batch. On a CPU it is throughput, not
    memory (the machine swaps long before an error), so the preset's measured batch size is kept."""
    return device.type in ("cuda", "mps")


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    # MPS reports exhaustion as a plain RuntimeError, cuDNN and cuBLAS as an allocation failure.
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text.lower() or "ALLOC_FAILED" in text)


def largest_fitting(fits: Callable[[int], bool], start: int, limit: int) -> int:
    """The largest batch b in [1, limit] with fits(b), assuming fitting is monotone in b.

    Doubles from `start` while it fits, then bisects down to a 1/16 step, so a probe costs about
    ten trial steps. 0 means not even a batch of 1 fits.
    """
    fitting, failing = 0, limit + 1
    size = max(1, min(start, limit))
    while size < failing:
        if fits(size):
            fitting = size
            if size == limit:
                break
            size = min(size * 2, limit)
        else:
            failing = size
            break
    while failing - fitting > max(1, fitting // 16) and failing <= limit:
        middle = (fitting + failing) // 2
        if fits(middle):
            fitting = middle
        else:
            failing = middle
    return fitting


def with_headroom(largest: int) -> int:
    """A batch a little under the largest that fit, in multiples of 8 once that is possible."""
    chosen = max(1, int(largest * HEADROOM))
    return chosen - chosen % 8 if chosen >= 16 else chosen
