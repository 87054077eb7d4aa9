"""JAX's cold start: the persistent compilation cache and one XLA flag for GPUs.

Both are process-wide JAX settings. mlp sets them once, when it first loads the
JAX backend (``backends.get("jax...")``), never when ``import mlp`` runs, and
never where the user chose for themselves (docs/benchmarks.md, "JAX cold start"):

- **Persistent compilation cache**, on by default in ``$XDG_CACHE_HOME/mlp/jax``
  (``~/.cache/mlp/jax`` without XDG_CACHE_HOME): a second process loads the
  compiled train step from disk instead of compiling it again.
  ``MLP_JAX_CACHE_DIR=path`` moves it, ``MLP_JAX_CACHE=0`` turns it off. A
  cache the user configured (``JAX_COMPILATION_CACHE_DIR``, or
  ``jax.config.update("jax_compilation_cache_dir", ...)`` before loading the
  backend) or turned off (``JAX_ENABLE_COMPILATION_CACHE=false``) is left as it is.
  JAX writes only programs that took at least 1 s to compile; mlp lowers that to
  :data:`MIN_COMPILE_SECS` (0: every program) so that small CPU programs are cached
  too, unless ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` is set.
- **``--xla_gpu_enable_triton_gemm=false``** appended to ``XLA_FLAGS``: float32 at
  precision "highest" made XLA autotune Triton GEMMs for 5-15 s per program on
  an H200, for no speed over cuBLAS. Added only when a JAX CUDA plugin is
  installed, the GPU will be used (``jax``/``jax:gpu`` asked for, JAX_PLATFORMS
  allows it), XLA_FLAGS does not mention the flag already, and JAX has not yet
  started its backends (XLA reads XLA_FLAGS once). A CPU-only jaxlib never sees it.
"""
from __future__ import annotations

import importlib.util
import os
from importlib.metadata import entry_points

#: programs that compile faster than this are not written to the persistent cache.
#: JAX's own default, 1 s, leaves out every program of a small model on a CPU; and
#: the eager operations of a fit (each its own small program, 10-40 ms to compile)
#: add up to ~0.2 s per process, a cold start's whole budget: so every program.
MIN_COMPILE_SECS = 0.0
TRITON_FLAG = "--xla_gpu_enable_triton_gemm=false"
CUDA_PLUGINS = ("jax_cuda13_plugin", "jax_cuda12_plugin")
OFF = ("0", "false", "no", "off")

#: what :func:`configure_cache` and :func:`add_gpu_flags` did in this process (for
#: ``mlp info``-style reports and the tests): {"cache": path or a reason, "xla_flag": ...}
SETTINGS: dict = {}


def default_cache_dir(env=None):
    """Where mlp puts JAX's persistent cache: MLP_JAX_CACHE_DIR, else
    ``$XDG_CACHE_HOME/mlp/jax`` (``~/.cache/mlp/jax``); None when MLP_JAX_CACHE=0."""
    env = os.environ if env is None else env
    if env.get("MLP_JAX_CACHE", "").strip().lower() in OFF:
        return None
    if env.get("MLP_JAX_CACHE_DIR"):
        return os.path.abspath(os.path.expanduser(env["MLP_JAX_CACHE_DIR"]))
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mlp", "jax")


def configure_cache(jax, env=None):
    """Turn on JAX's persistent compilation cache in :func:`default_cache_dir`,
    unless the user configured or turned off JAX's cache, or mlp's (MLP_JAX_CACHE=0).
    Once per process; returns the cache folder in use (the user's, if theirs), or None."""
    if "cache" in SETTINGS:
        return SETTINGS["cache"]
    env = os.environ if env is None else env
    config = jax.config
    if not config.jax_enable_compilation_cache:
        SETTINGS["cache"] = None  # the user turned JAX's cache off
    elif config.jax_compilation_cache_dir:
        SETTINGS["cache"] = config.jax_compilation_cache_dir  # the user's own
    else:
        path = default_cache_dir(env)
        if path is not None:
            config.update("jax_compilation_cache_dir", path)
            if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in env and (
                    config.jax_persistent_cache_min_compile_time_secs > MIN_COMPILE_SECS):
                config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
        SETTINGS["cache"] = path
    return SETTINGS["cache"]


def has_cuda_plugin():
    """Whether a JAX CUDA plugin is installed (so this jaxlib knows XLA's GPU flags)."""
    if any(importlib.util.find_spec(name) is not None for name in CUDA_PLUGINS):
        return True
    return any("cuda" in ep.name for ep in entry_points(group="jax_plugins"))


def gpu_xla_flags(platform, env=None, *, cuda=None):
    """The XLA_FLAGS value with :data:`TRITON_FLAG` appended, or None to leave
    XLA_FLAGS alone: no CUDA plugin (``cuda``, default :func:`has_cuda_plugin`),
    the CPU asked for (``platform == "cpu"``), JAX_PLATFORMS without a GPU
    platform, or a user's XLA_FLAGS that already mentions the flag."""
    env = os.environ if env is None else env
    if platform == "cpu":
        return None
    platforms = env.get("JAX_PLATFORMS", "").lower()
    if platforms and not any(p in platforms for p in ("cuda", "gpu")):
        return None
    flags = env.get("XLA_FLAGS", "")
    if "xla_gpu_enable_triton_gemm" in flags:
        return None
    if not (has_cuda_plugin() if cuda is None else cuda):
        return None
    return f"{flags} {TRITON_FLAG}".strip()


def add_gpu_flags(platform, backends_started):
    """Append :data:`TRITON_FLAG` to ``os.environ["XLA_FLAGS"]`` where
    :func:`gpu_xla_flags` says so and JAX's backends have not started yet."""
    if backends_started:
        return None
    flags = gpu_xla_flags(platform)
    if flags is not None:
        os.environ["XLA_FLAGS"] = flags
        SETTINGS["xla_flag"] = TRITON_FLAG
    return flags
