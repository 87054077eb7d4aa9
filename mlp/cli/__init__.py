"""The ``mlp`` command: ``train``, ``evaluate``, ``predict``, ``export``, ``summary``, ``backends``.

    mlp train                                   # digits, NumPy on the CPU, a progress bar
    mlp train --device gpu --save run.safetensors
    mlp train --resume run.safetensors --epochs 5
    mlp evaluate run.safetensors --backend jax
    mlp predict run.safetensors rows.csv
    mlp summary --sizes 784,16,10
    mlp backends

Errors a user can fix (a missing GPU, a bad flag, a missing file) print one line
``mlp: error: ...`` on stderr and exit with status 2. See docs/cli.md.

The package: ``parser`` (flags), ``train`` (the train command in steps),
``commands`` (the others), ``common`` (what they share); each over public functions.
"""
from __future__ import annotations

import sys

from .. import backends

from ..errors import is_out_of_memory, MLPError
from .commands import evaluate, list_backends, predict, summary
from .export import export
from .parser import build_parser, CLIError, Interrupted
from .train import train

__all__ = ["main", "build_parser", "COMMANDS", "CLIError", "Interrupted"]

COMMANDS = {"train": train, "evaluate": evaluate, "predict": predict, "export": export, "summary": summary,
            "backends": list_backends}


def main(argv=None):
    """Run the ``mlp`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CLIError, MLPError, backends.BackendUnavailable, ValueError, OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"mlp: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"mlp: {err}" if str(err) else "mlp: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - only out-of-memory errors, from any library
        if not is_out_of_memory(err):
            raise
        print(f"mlp: error: out of memory ({type(err).__name__}); try a smaller --batch-size, a smaller "
              f"model or another --device", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
