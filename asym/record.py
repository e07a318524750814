"""What a run records, by name: its status and its summary numbers (torch-free).

The trainer writes these into a run's ``result.json``; ``asym.tracking`` logs the same names to MLflow (the
``status`` tag, the summary metrics); ``asym-status``, ``asym-tables`` and ``asym-sync`` read them back. One
module, so the trainer and the MLflow schema share the words without either importing the other.
"""
from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    """A run's state, in the order ``asym-status`` lists them. Five are recorded (``result.json``'s ``status``,
    MLflow's ``status`` tag); ``asym-status`` alone infers ``queued``, ``unsynced``, ``lost`` and ``not submitted``
    (from the plan, the run records and the scheduler). A ``str`` whose text is the value, so a stored tag or file
    compares, hashes and serialises exactly as the plain strings always did."""

    FINISHED = "finished"        # trained every epoch of the protocol
    DIVERGED = "diverged"        # its loss became NaN/inf: stopped with its best-so-far (protocol decision 7)
    RUNNING = "running"
    QUEUED = "queued"            # asym-status only: planned, not started (or waiting in the scheduler)
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM: the checkpoint of its last finished epoch resumes it
    FAILED = "failed"            # an exception, or a worker killed outside Python
    UNSYNCED = "unsynced"        # asym-status only: its job ended well but MLflow lacks the result (asym-sync)
    LOST = "lost"                # asym-status only: its job left the queue without a result or an error
    NOT_SUBMITTED = "not submitted"  # asym-status only: sbatch refused it, or the submission stopped before it

    def __str__(self) -> str:   # "finished", never "RunStatus.FINISHED" (f-strings, str(), MLflow tags)
        return self.value


DONE = (RunStatus.FINISHED, RunStatus.DIVERGED)  # a run in one of these states is never trained again
# which of several runs of one config hash stands for it (``asym.tracking.stands_for``), most telling first
PREFERENCE = (RunStatus.FINISHED, RunStatus.DIVERGED, RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.FAILED)

# A run's number (protocol decision 7): its least test error over epochs, and that epoch.
BEST_ERROR, BEST_EPOCH = "best_val_error", "best_epoch"
# With train.select_on=val: the per-epoch error on the held-out part of the training split, and the run's number
# chosen on it (the epoch of least holdout error, that error, and the test error at that epoch).
HOLDOUT_ERROR = "holdout_error"
SELECTED_EPOCH, SELECTED_HOLDOUT_ERROR, SELECTED_ERROR = "selected_epoch", "selected_holdout_error", "selected_error"
RESULT_FILE = "result.json"  # a run directory's record
