"""The paper's vocabulary without torch: model labels (its table columns) and feedback modes.

A label is ``+``-joined tokens, e.g. ``uSF+BN+BM3`` or ``brSF-p50+BN+BM``:
  feedback  uSF | NuSF | brSF | frSF | brSF-p<P> | frSF-p<P> | RndF   (none: symmetric BP)
  BN        batch normalisation (learnable scale/shift only in the symmetric ``BN`` / ``BN+BM``)
  BM[1-3]   Batch Manhattan setting (BM = BM1; none: setting 0, SGD)
  SGD       alone: plain SGD with momentum and weight decay
Feedback modes (Section 2; protocol decision 2 in docs/protocol.md) are what ``asym.feedback`` builds.
Torch-free, so configs, sweeps, tables and status can read labels without loading the science.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

RNDF_STD = 0.05  # paper: sigma chosen to be 0.05 in all experiments
FEEDBACK_MODES = ("bp", "usf", "nusf", "brsf", "frsf", "rndf")
_MODE_RE = re.compile(r"^(bp|usf|nusf|brsf|frsf|rndf)(?:-p(\d{1,3}))?$")


@dataclass(frozen=True)
class FeedbackSpec:
    """A parsed feedback mode: ``mode`` in FEEDBACK_MODES, ``flip`` = sign-flip probability in [0, 1]."""

    mode: str = "bp"
    flip: float = 0.0

    @classmethod
    def parse(cls, text: "str | FeedbackSpec") -> "FeedbackSpec":
        if isinstance(text, FeedbackSpec):
            return text
        m = _MODE_RE.match(str(text).lower())
        if not m:
            raise ValueError(
                f"unknown feedback mode {text!r}: expected one of {', '.join(FEEDBACK_MODES)}, "
                "or brsf-p<P>/frsf-p<P> with P a sign-flip percentage (e.g. brsf-p25)")
        mode, p = m.group(1), m.group(2)
        if p is not None and mode not in ("brsf", "frsf"):
            raise ValueError(f"feedback {text!r}: only brsf and frsf take a -p<P> sign-flip suffix")
        if p is not None and int(p) > 100:
            raise ValueError(f"feedback {text!r}: P is a percentage in 0..100")
        return cls(mode, int(p) / 100 if p is not None else 0.0)

    @property
    def name(self) -> str:
        return f"{self.mode}-p{round(self.flip * 100)}" if self.flip else self.mode


_FEEDBACK_LABELS = {"usf": "uSF", "nusf": "NuSF", "brsf": "brSF", "frsf": "frSF", "rndf": "RndF"}
_FEEDBACK_RE = re.compile(r"^(uSF|NuSF|brSF|frSF|RndF)(?:-p(\d{1,3}))?$")
_BM_RE = re.compile(r"^BM([123])?$")
LABEL_GRAMMAR = ("[uSF|NuSF|brSF|frSF|brSF-p<P>|frSF-p<P>|RndF][+BN][+BM|+BM1|+BM2|+BM3], or SGD "
                 "(e.g. 'uSF+BN+BM', 'brSF-p50+BN+BM', 'RndF+BN', 'BM2')")
FREEZE_CHOICES = ("none", "bottom", "top")


@dataclass(frozen=True)
class ModelSpec:
    """An experimental condition: how feedback, normalisation and the update rule are set."""

    feedback: str = "bp"        # a feedback mode of asym.feedback
    flip: float = 0.0           # sign-flip probability p of the -p variants
    batchnorm: bool = False
    bn_affine: bool = False     # learnable BN scale/shift (only the symmetric BN models)
    setting: int = 0            # Batch Manhattan setting, 0 = SGD

    @property
    def feedback_name(self) -> str:
        return FeedbackSpec(self.feedback, self.flip).name

    @property
    def label(self) -> str:
        """The canonical label: ``BM1`` is written ``BM`` and ``brSF-p0`` is ``brSF``."""
        parts = []
        if self.feedback != "bp":
            fb = _FEEDBACK_LABELS[self.feedback]
            parts.append(f"{fb}-p{round(self.flip * 100)}" if self.flip else fb)
        if self.batchnorm:
            parts.append("BN")
        if self.setting:
            parts.append("BM" if self.setting == 1 else f"BM{self.setting}")
        return "+".join(parts) or "SGD"


def parse_model(label: "str | ModelSpec") -> ModelSpec:
    """Parse a table column label such as ``uSF+BN+BM3`` into a ModelSpec; ValueError if unknown."""
    if isinstance(label, ModelSpec):
        return label

    def bad(why: str) -> ValueError:
        return ValueError(f"unknown model label {label!r} ({why}); grammar: {LABEL_GRAMMAR}")

    tokens = str(label).strip().split("+")
    if tokens == ["SGD"]:
        return ModelSpec()
    feedback, flip, batchnorm, setting = "bp", 0.0, False, 0
    for i, tok in enumerate(tokens):
        fb, bm = _FEEDBACK_RE.match(tok), _BM_RE.match(tok)
        if fb and i == 0:
            feedback = fb.group(1).lower()
            if fb.group(2) is not None:
                if feedback not in ("brsf", "frsf"):
                    raise bad("only brSF and frSF take -p<P>")
                if int(fb.group(2)) > 100:
                    raise bad("P is a percentage")
                flip = int(fb.group(2)) / 100
        elif tok == "BN" and not batchnorm and not setting:
            batchnorm = True
        elif bm and not setting:
            setting = int(bm.group(1) or 1)
        else:
            raise bad(f"unexpected {tok!r}")
    return ModelSpec(feedback, flip, batchnorm, batchnorm and feedback == "bp", setting)
