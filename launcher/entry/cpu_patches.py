"""Fill three MindSpore 2.9 CPU gaps so the MindFormers YAML Trainer path runs on CPU.

Imported by ``run_cpu.py`` before anything builds a network. Each patch replaces one
Ascend-only operator with a CPU-supported one doing the same job; on Ascend none of this
is imported. Standalone on purpose (no ``launcher`` imports): it is staged to hosts alone.

(a) ``NPUGetFloatStatusV2`` has no CPU kernel: the loss-scale wrapper's overflow check
    (``TrainOneStepWithLossScaleCell.get_overflow_status``) uses the IsFinite-based check
    MindSpore already has for Ascend's INFNAN mode instead.
(b) ``Barrier`` has no CPU kernel (``comm_func.barrier``, reached when ``use_parallel`` and
    ``load_checkpoint`` are both set): a one-element ``AllReduce`` blocks every rank until
    all have reached it, which is all a barrier does.
(c) ``ArgMaxExt`` is unregistered on CPU (``GenerationMixin`` uses ``mint.argmax`` for
    greedy decoding): ``ops.Argmax`` computes the same indices.
"""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, ops
from mindspore.nn.wrap.loss_scale import _ascend_grad_overflow

_APPLIED = False


def _overflow_status_isfinite(self, status, compute_output):
    """(a) overflow = some gradient is not finite (summed over ranks when distributed)."""
    return self._get_distributed_overflow_status_on_infnan_mode(_ascend_grad_overflow, compute_output)


def _barrier_by_allreduce(group=None):
    """(b) every rank adds one to a one-element tensor: nobody returns before all arrived."""
    from mindspore.communication import GlobalComm

    op = ops.AllReduce(group=group or GlobalComm.WORLD_COMM_GROUP)
    op(Tensor(np.ones(1, np.float32)))


def _argmax_cpu(input, dim=None, keepdim=False):  # noqa: A002 - mint.argmax's own signature
    """(c) mint.argmax(input, dim, keepdim) through ops.Argmax (CPU kernel exists)."""
    if dim is None:
        return ops.Argmax(axis=-1)(input.reshape(-1))
    out = ops.Argmax(axis=dim)(input)
    return out.expand_dims(dim) if keepdim else out


def apply() -> None:
    """Install the three replacements once (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    from mindspore import nn
    from mindspore.communication import comm_func

    nn.TrainOneStepWithLossScaleCell.get_overflow_status = _overflow_status_isfinite
    comm_func.barrier = _barrier_by_allreduce
    # modules that imported the name directly keep their own reference: patch those too
    import mindformers.trainer.utils as trainer_utils
    import mindformers.utils.parallel_utils as parallel_utils
    import mindformers.version_control as version_control
    for module in (trainer_utils, version_control):
        if hasattr(module, "barrier"):
            module.barrier = _barrier_by_allreduce
    parallel_utils.comm_func = comm_func
    import mindformers.generation.text_generator as text_generator
    text_generator.mint.argmax = _argmax_cpu  # GenerationMixin reads mint.argmax at __init__
    _APPLIED = True
