"""asym's Hydra plugins: the paper-grid sweeper and the SLURM / local-pool launchers (logic in asym.launcher)."""
# No `from __future__ import annotations` in this package: Hydra's plugin scan execs these files outside
# sys.modules, where dataclasses cannot resolve string annotations. The classes import asym.launcher inside their
# methods for the same scan's sake: it imports every hydra_plugins module in any Hydra app, which should not pay
# for asym's launchers (submitit, MLflow) unless one of these plugins is chosen.
from .launchers import AsymLocalLauncher, AsymSlurmLauncher  # noqa: F401
from .sweeper import AsymSweeper  # noqa: F401
