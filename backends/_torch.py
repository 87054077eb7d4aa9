"""PyTorch tensors through array-api-compat's torch namespace, on CPU or CUDA."""
import contextlib

import numpy as np

from ._base import Backend, BackendUnavailable, parse_device


class TorchBackend(Backend):
    @property
    def precisions(self):
        # bfloat16 products on the CPU and CUDA; TF32 on CUDA GPUs that have it (Ampere and newer)
        if self.device.type == "cuda" and self.library.cuda.get_device_capability(self.device) >= (8, 0):
            return ("float32", "tf32", "bf16")
        return ("float32", "bf16")

    def matmul(self, a, b, precision="float32"):
        xp = self.xp  # through the namespace, so that mlp.opcount counts the casts too
        if precision == "bf16":  # bfloat16 inputs, float32 accumulation; the result is rounded to bfloat16
            bf16 = self.library.bfloat16
            return xp.astype(xp.matmul(xp.astype(a, bf16), xp.astype(b, bf16)), a.dtype)
        if precision == "tf32" and "tf32" in self.precisions:
            with _tf32(self.library):
                return xp.matmul(a, b)
        return super().matmul(a, b, precision)

    def asarray(self, obj, dtype=None):
        host = np.asarray(obj)
        if not host.flags.writeable:  # torch warns on sharing read-only memory (memmaps)
            host = host.copy()
        return super().asarray(host, dtype)

    def to_numpy(self, x):
        return x.detach().cpu().numpy()

    def synchronize(self, *arrays):
        if self.device.type == "cuda":
            self.library.cuda.synchronize(self.device)
        return arrays[0] if len(arrays) == 1 else arrays

    def capture(self, step, args):
        """On CUDA, the step replayed from a CUDA graph (see ``backends/_capture.py``)."""
        if self.device.type != "cuda":
            return None
        from ._capture import capture

        return capture(step, args, CudaGraphs(self.library, self.device))


class CudaGraphs:
    """PyTorch's CUDA graphs as the graph API of ``backends._capture`` (as in
    PyTorch's documentation: warm-up on a side stream, then ``torch.cuda.graph``)."""

    def __init__(self, torch, device):
        self.torch, self.device = torch, device

    def graph(self):
        return self.torch.cuda.CUDAGraph()

    @contextlib.contextmanager
    def warming(self):
        cuda = self.torch.cuda
        with cuda.device(self.device):
            side, main = cuda.Stream(), cuda.current_stream()
            side.wait_stream(main)
            with cuda.stream(side):
                yield
            main.wait_stream(side)

    def record(self, graph, fn):
        with self.torch.cuda.device(self.device), self.torch.cuda.graph(graph):
            return fn()

    def replay(self, graph):
        graph.replay()

    def is_array(self, obj):
        return isinstance(obj, self.torch.Tensor)

    def clone(self, a):
        return a.clone()

    def copy_into(self, dst, src):
        dst.copy_(src)

    def to_host(self, a):
        return a.detach().cpu().numpy()


@contextlib.contextmanager
def _tf32(torch):
    """TF32 for the CUDA matrix products launched inside, and the process's own
    setting back afterwards. PyTorch's switch is process-wide: another thread that
    launches a float32 product meanwhile would get TF32 too (docs/precision.md)."""
    flags = torch.backends.cuda.matmul
    new_api = hasattr(flags, "fp32_precision")
    before = flags.fp32_precision if new_api else flags.allow_tf32
    try:
        if new_api:
            flags.fp32_precision = "tf32"
        else:
            flags.allow_tf32 = True
        yield
    finally:
        if new_api:
            flags.fp32_precision = before
        else:
            flags.allow_tf32 = before


def load(device=None):
    import torch

    kind, index = parse_device(device, "torch", expected="cpu, cuda, cuda:N or gpu:N")
    if device in (None, "") or (kind == "cpu" and not index):
        dev = torch.device("cpu")
    else:
        if kind == "cpu":
            raise BackendUnavailable(f"torch has no device {device!r}; expected cpu, cuda, cuda:N or gpu:N")
        if not torch.cuda.is_available():
            raise BackendUnavailable(
                f"torch {torch.__version__}: installed, no CUDA device "
                "(torch.cuda.is_available() is False)"
            )
        count = torch.cuda.device_count()
        if int(index or 0) >= count:
            raise BackendUnavailable(f"torch sees {count} CUDA device(s); asked for {device!r}")
        dev = torch.device("cuda", int(index or 0))
    import array_api_compat.torch as xp

    return TorchBackend("torch", xp, dev, version=torch.__version__, library=torch, device_name=str(dev))


def probe():
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return {"status": "ready", "version": torch.__version__, "devices": devices}
