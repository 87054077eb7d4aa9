"""``mlp.backends``: the repository's ``backends/`` folder under a name of ``mlp``.

Installed, setuptools puts that folder at ``mlp/backends`` (``package-dir`` in
pyproject.toml), so no ``backends`` folder in a user's working directory can
shadow it. In a source checkout (``PYTHONPATH`` at the repository root) this
loads ``backends/`` next to ``mlp/`` under the same name, once.
"""
import importlib
import importlib.util
import os
import sys

_name = __package__ + ".backends"
if _name in sys.modules or importlib.util.find_spec(_name) is not None:  # installed (or loaded)
    backends = importlib.import_module(_name)
else:
    _folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "backends")
    _spec = importlib.util.spec_from_file_location(_name, os.path.join(_folder, "__init__.py"),
                                                   submodule_search_locations=[_folder])
    backends = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = backends
    _spec.loader.exec_module(backends)

__all__ = ["backends"]
