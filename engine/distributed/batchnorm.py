"""``SyncBatchNorm``: batch normalisation whose statistics span every rank's share
of the batch (``engine.nn.SyncBatchNorm``, as ``torch.nn.SyncBatchNorm``).

With plain ``BatchNorm2d`` each rank normalises with the statistics of its own
share (``global batch / world size`` samples): fine for large shares, noisy
for small ones. ``SyncBatchNorm`` reduces per-channel sums over the ranks, so
that in training it computes what one process computes with ``BatchNorm`` on
the whole (concatenated) batch:

* forward: the counts and per-channel sums of ``x`` are summed over the ranks
  (one allreduce), giving the mean; then the sums of the squared deviations
  from that mean (a second allreduce, a two-pass variance as in
  ``engine.ops.batch_norm``), giving the biased variance that normalises and
  the unbiased one that updates the running statistics;
* backward: the per-channel sums of the output gradient ``g`` and of
  ``g * x_hat`` are summed over the ranks (one allreduce) and give ``dx``;
  ``dweight``/``dbias`` are returned as this rank's own sums, which the
  :class:`~engine.distributed.DistributedOptimizer` averages with the other
  gradients (each rank's loss is a mean over its share, so the average is the
  whole batch's gradient).

In evaluation mode it is ``BatchNorm`` with the running statistics (no
communication). In a world of one it equals ``BatchNorm``.
"""
from __future__ import annotations

import math

from .. import backends
from ..autograd import Function
from ..autograd.tensor import as_array
from ..nn.normalization import BatchNorm1d, BatchNorm2d, _BatchNorm
from ..ops.normalization import _channel_shape, _reduce_axes
from .runtime import world

__all__ = ["SyncBatchNorm"]


class SyncBatchNormNode(Function):
    """The tape node: forward and backward on arrays, with the per-channel sums
    reduced over the ranks by ``communicator``."""

    def __init__(self, communicator, running_mean, running_var, momentum, eps):
        super().__init__()
        self.comm = communicator
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps = momentum, eps

    def forward(self, x, weight=None, bias=None):
        xp = backends.backend_of(x).xp
        axes, shape, c = _reduce_axes(x), _channel_shape(x), x.shape[1]
        local_count = math.prod(x.shape[i] for i in axes)
        sums = xp.zeros((c + 1,), dtype=x.dtype)
        sums[:c] = xp.sum(x, axis=axes)
        sums[c] = float(local_count)
        self.comm.allreduce_(sums, "sum")
        count = sums[c]  # stays on the device (no host read)
        mean = sums[:c] / count
        centred = x - xp.reshape(mean, shape)
        squares = xp.sum(centred * centred, axis=axes)
        self.comm.allreduce_(squares, "sum")
        var = squares / count
        invstd = 1.0 / xp.sqrt(var + self.eps)
        m = self.momentum
        if self.running_mean is not None:
            self.running_mean[...] = (1 - m) * self.running_mean + m * mean
        if self.running_var is not None:
            self.running_var[...] = (1 - m) * self.running_var + m * (squares / (count - 1))
        self.running_mean = self.running_var = None  # updated in place; not kept alive by the graph
        scale = invstd if weight is None else invstd * weight
        y = centred * xp.reshape(scale, shape)
        if bias is not None:
            y = y + xp.reshape(bias, shape)
        if self.recording:
            self.saved = (centred, invstd, weight, count)
        return y

    def backward(self, g):
        centred, invstd, weight, count = self.saved
        xp = backends.backend_of(g).xp
        axes, shape, c = _reduce_axes(g), _channel_shape(g), g.shape[1]
        x_hat = centred * xp.reshape(invstd, shape)
        sums = xp.zeros((2 * c,), dtype=g.dtype)
        sums[:c] = xp.sum(g, axis=axes)
        sums[c:] = xp.sum(g * x_hat, axis=axes)
        dbias, dweight = xp.asarray(sums[:c], copy=True), xp.asarray(sums[c:], copy=True)  # this rank's own
        dx = None
        needs = self.needs_input_grad
        if needs[0]:
            self.comm.allreduce_(sums, "sum")
            scale = invstd if weight is None else invstd * weight
            dx = (g - xp.reshape(sums[:c] / count, shape)
                  - x_hat * xp.reshape(sums[c:] / count, shape)) * xp.reshape(scale, shape)
        grads = (dx, dweight if len(needs) > 1 and needs[1] else None, dbias if len(needs) > 2 and needs[2] else None)
        return grads[:len(needs)]


class SyncBatchNorm(_BatchNorm):
    """Batch normalisation over ``(N, C, *)`` with statistics over every rank's
    samples in training (see the module notes); PyTorch's arguments and
    state_dict keys. ``process_group`` is accepted for ported code and must be
    ``None`` (the whole world). ``SyncBatchNorm.convert_sync_batchnorm(model)``
    turns a model's ``BatchNorm1d``/``BatchNorm2d`` layers into this one."""

    _layout = "(N, C) or (N, C, ...)"
    _ndims = (2, 3, 4, 5)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None, *, bias=True):
        if process_group is not None:
            raise ValueError("SyncBatchNorm: process_group must be None (statistics over every rank); "
                             "sub-groups are not supported")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def forward(self, input):
        if not self.training:
            return super().forward(input)
        self._check_input(input)
        array = as_array(input)
        backend = backends.backend_of(array)
        if backend is None or "float" not in str(array.dtype):
            raise TypeError(f"{self._label()}: input must be a floating-point array of the engine's backends, "
                            f"got {type(array).__name__} {getattr(array, 'dtype', '')}")
        if self.weight is not None and self.weight.data.dtype != array.dtype:
            raise TypeError(f"{self._label()}: input dtype {array.dtype} differs from the layer's "
                            f"{self.weight.data.dtype}; convert the model or the data (e.g. model.to('float64'))")
        factor = 0.0
        if self.track_running_stats:
            nbt = self.num_batches_tracked + 1
            self._set_buffer("num_batches_tracked", nbt)
            factor = self.momentum if self.momentum is not None else 1.0 / backend.xp.astype(nbt, array.dtype)
        comm = world().device_communicator(backend)
        node = SyncBatchNormNode(comm, self.running_mean, self.running_var, factor, self.eps)
        affine = [p for p in (self.weight, self.bias) if p is not None]  # (weight[, bias]) or nothing
        return node(input, *affine)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every ``BatchNorm1d``/``BatchNorm2d`` replaced by a
        ``SyncBatchNorm`` holding the same parameters and running statistics
        (a batch-norm ``module`` itself comes back converted)."""
        if isinstance(module, (BatchNorm1d, BatchNorm2d)) and not isinstance(module, SyncBatchNorm):
            reference = module.weight.data if module.weight is not None else module.running_mean
            sync = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                       process_group, dtype=str(reference.dtype) if reference is not None else None,
                       bias=module.bias is not None)
            if module.weight is not None:
                sync.weight = module.weight
            if module.bias is not None:
                sync.bias = module.bias
            if module.track_running_stats:
                for name in ("running_mean", "running_var", "num_batches_tracked"):
                    sync._set_buffer(name, getattr(module, name))
            sync.train(module.training)
            return sync
        for name, child in list(module._modules.items()):
            converted = cls.convert_sync_batchnorm(child, process_group)
            if converted is not child:
                setattr(module, name, converted)
        return module
