"""``asym-train`` in this process: the console script's own function on a patched ``sys.argv``, in a given
working directory, its stdout/stderr captured and its exit code returned — no new interpreter, no torch import."""
from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def asym_train(cwd: Path, *args: str) -> Result:
    """What ``asym-train ARGS`` run in ``cwd`` prints and returns (Hydra's global state cleared afterwards)."""
    import asym.cli
    from hydra.core.global_hydra import GlobalHydra
    out, err, code = io.StringIO(), io.StringIO(), 0
    here, argv = os.getcwd(), sys.argv
    os.chdir(cwd)
    sys.argv = ["asym-train", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            asym.cli.train()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(here)
        GlobalHydra.instance().clear()
    return Result(code, out.getvalue(), err.getvalue())
