"""PyTorch tensors through array-api-compat's torch namespace, on CPU or CUDA."""
import numpy as np

from ._base import Backend, BackendUnavailable, parse_device


class TorchBackend(Backend):
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
