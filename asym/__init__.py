"""Asymmetric backpropagation (Liao, Leibo & Poggio, AAAI 2016): the science, free of Hydra/MLflow/SLURM.

The public names below load on first use (PEP 562), so tools that only read labels, configs or MLflow
(``asym-tables``, ``asym-status``, a rejected ``asym-train`` override) never import torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {  # name → the module that defines it
    "nn": "asym.nn", "optim": "asym.optim",
    "AsymConv2d": "asym.nn", "AsymLinear": "asym.nn", "convert": "asym.nn",
    "FeedbackSpec": "asym.labels", "ModelSpec": "asym.labels", "parse_model": "asym.labels",
    "make_feedback": "asym.feedback", "build_network": "asym.models",
}
__all__ = sorted(n for n in _PUBLIC if n not in ("nn", "optim")) + ["__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'asym' has no attribute {name!r}")
    module = importlib.import_module(_PUBLIC[name])
    value = module if module.__name__ == f"asym.{name}" else getattr(module, name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
