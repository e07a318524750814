"""Asymmetric backpropagation (Liao, Leibo & Poggio, AAAI 2016): the science, free of Hydra/MLflow/SLURM."""
from . import nn, optim  # asym.nn.AsymConv2d, asym.optim.BatchManhattan
from .feedback import FeedbackSpec, make_feedback
from .models import ModelSpec, build_network, parse_model
from .nn import AsymConv2d, AsymLinear, convert

__version__ = "0.1.0"
__all__ = ["AsymConv2d", "AsymLinear", "FeedbackSpec", "ModelSpec", "build_network", "convert",
           "make_feedback", "parse_model", "__version__"]
