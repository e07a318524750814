"""``hydra.launcher.runs_per_task=K``: K jobs one after another in each SLURM array task (issue 13 item 5).

Without a cluster: the dry run's ``--array`` size, bad K as one line before anything is written, the task's
job loop, and the per-process dataset cache. The real-SLURM tests are in test_cluster.py.
"""
import re

import numpy as np
import pytest
import submitit
import torch

from asym import cli
from asym.launcher.slurm import LaunchError, RunsInTurn, check_runs_per_task, in_tasks

SWEEP = ["model=SGD,BN", "lr_mult=10,1,0.1", "dataset=digits", "train=demo", "train.epochs=1", "hydra/launcher=slurm"]


@pytest.mark.parametrize("k,tasks", [(1, 6), (4, 2), (50, 1)])
def test_dry_run_shows_one_array_task_per_k_runs(asym_train, tmp_path, k, tasks):
    res = asym_train("-m", *SWEEP, f"hydra.launcher.runs_per_task={k}", "hydra.launcher.dry_run=true",
                     f"tracking.uri=sqlite:///{tmp_path}/m.db", f"output_root={tmp_path}/runs")
    assert res.returncode == 0, res.stderr[-2000:]
    arrays = re.findall(r"^#SBATCH --array=(\S+)$", res.stdout, re.M)
    assert arrays == [f"0-{tasks - 1}%{min(tasks, 256)}"]


@pytest.mark.parametrize("k", ["0", "-1", "1.5", "abc"])
def test_bad_runs_per_task_is_one_line_before_anything_is_written(asym_train, tmp_path, k):
    from conftest import assert_one_error_line
    res = asym_train("-m", *SWEEP, f"hydra.launcher.runs_per_task={k}", f"tracking.uri=sqlite:///{tmp_path}/m.db",
                     f"output_root={tmp_path}/runs")
    assert_one_error_line(res, "runs_per_task must be a whole number >= 1", tmp_path)


@pytest.mark.parametrize("k", [0, -3, 2.0, "2", None, True])
def test_a_bad_runs_per_task_from_a_config_file_is_refused_too(k):
    """Not only the command line: the launcher refuses it before the sweeper writes anything."""
    from hydra_plugins.asym_hydra.launchers import AsymSlurmLauncher
    with pytest.raises(LaunchError, match="runs_per_task must be a whole number"):
        AsymSlurmLauncher(runs_per_task=k).check()
    assert check_runs_per_task(3) == 3


@pytest.mark.parametrize("n,k,sizes", [(6, 3, [3, 3]), (7, 3, [3, 3, 1]), (2, 5, [2]), (4, 1, [1, 1, 1, 1])])
def test_jobs_go_to_tasks_in_order(n, k, sizes):
    tasks = in_tasks(list(range(n)), k)
    assert [len(t) for t in tasks] == sizes and [j for t in tasks for j in t] == list(range(n))


def test_a_task_trains_every_job_and_then_reports_the_first_failure():
    """A failing job does not stop the jobs after it; the task then fails (the scheduler shows FAILED), and on
    preemption the same jobs are resubmitted."""
    ran = []

    def launcher(overrides, key, num, job_id, state):
        ran.append(num)
        if num in (1, 2):
            raise RuntimeError(f"job {num} broke")
        return num
    jobs = [([f"lr_mult={m}"], "hydra.sweep.dir", i, f"job_id_for_{i}", {}) for i, m in enumerate((10, 1, 0.1, 0.01))]
    with pytest.raises(RuntimeError, match="job 1 broke"):
        RunsInTurn(launcher)(jobs)
    assert ran == [0, 1, 2, 3]
    assert RunsInTurn(lambda *job: job[2])(jobs) == [0, 1, 2, 3]
    again = RunsInTurn(launcher).checkpoint(jobs)
    assert isinstance(again, submitit.helpers.DelayedSubmission) and again.args == (jobs,)


def write_npz(path, seed):
    path.parent.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.normal(size=(8, 1845)), y_train=np.arange(8) % 80, x_test=rng.normal(size=(4, 1845)),
             y_test=np.arange(4))


def test_a_dataset_is_loaded_once_per_process_and_never_from_another_root(tmp_path, monkeypatch):
    """One array task's runs on one dataset read it once; another root, cache, seed or working directory (what
    a relative path means) is another load, never the tensors loaded before."""
    for d, seed in (("a", 1), ("b", 2)):
        write_npz(tmp_path / d / "timit80.npz", seed)  # the registry's TIMIT file under two roots
        write_npz(tmp_path / d / "feat.npz", seed)     # a user's npz, named by a relative path
    monkeypatch.chdir(tmp_path / "a")
    a = cli.load_data("timit80", str(tmp_path / "a"), 0, False, str(tmp_path / "cache-a"))
    assert cli.load_data("timit80", str(tmp_path / "a"), 0, False, str(tmp_path / "cache-a")) is a
    b = cli.load_data("timit80", str(tmp_path / "b"), 0, False, str(tmp_path / "cache-b"))
    assert not torch.equal(a.x_train, b.x_train)
    assert torch.equal(cli.load_data("timit80", ".", 0, False, str(tmp_path / "cache-a")).x_train, a.x_train)
    assert cli.load_data("timit80", ".", 1, False, str(tmp_path / "cache-a")) is not a
    user_a = cli.load_data("npz:feat.npz", ".", 0, False, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path / "b")
    user_b = cli.load_data("npz:feat.npz", ".", 0, False, str(tmp_path / "cache"))
    assert not torch.equal(user_a.x_train, user_b.x_train)
