"""Reading a SLURM cluster's limits (``asym.launcher.cluster``) and fitting a sweep to them (``slurm.plan_submission``).

The parsers run on output captured from the real Slurm 22.05 controller CI starts (``tests/data/slurm/``: its
stock configuration, and with ``MaxArraySize=5``, a partition ``MaxTime=30`` and accounting off, as
test_cluster.py sets them); the gres strings follow ``sinfo``'s documented ``%G`` format (no GPU node here).
"""
from pathlib import Path

import pytest

from asym.launcher import cluster as cl
from asym.launcher.slurm import Submission, plan_submission

DATA = Path(__file__).parent / "data" / "slurm"


def captured(config="config-default.txt", partition="partition-default.txt", **kw) -> cl.Cluster:
    return cl.parse_cluster((DATA / config).read_text(), (DATA / partition).read_text(),
                            (DATA / "sinfo-nodes.txt").read_text(), **kw)


class Launcher:
    """The settings plan_submission reads from AsymSlurmLauncher."""

    def __init__(self, runs_per_task=1, auto=False, **params):
        self.runs_per_task, self.auto_runs_per_task = runs_per_task, auto
        self.params = {"partition": None, "timeout_min": 240, "cpus_per_task": 2, "mem_gb": 8, **params}


def test_the_stock_controller_as_captured():
    c = captured(assoc_text=(DATA / "sacctmgr-assoc.txt").read_text(), qos_text=(DATA / "sacctmgr-qos.txt").read_text())
    assert (c.max_array_size, c.max_job_count, c.max_array_tasks, c.accounting, c.enforce) == \
        (1001, 10000, None, True, "none")
    assert c.default_partition == "debug" and list(c.partitions) == ["debug"]
    p = c.partitions["debug"]
    assert (p.max_time_min, p.cpus_per_node, p.gpus_per_node, p.state) == (None, 2, 0, "UP")
    assert p.mem_mb_per_node > 1000
    assert c.max_submit is None, "AccountingStorageEnforce=none: SLURM enforces no MaxSubmitJobs"
    assert cl.array_size(c) == 1001


def test_the_reconfigured_controller_as_captured():
    """MaxArraySize=5 and a partition MaxTime of 30 min, accounting off (what test_cluster.py sets)."""
    c = captured("config-small.txt", "partition-small.txt")
    assert (c.max_array_size, c.accounting, cl.array_size(c)) == (5, False, 5)
    assert c.partitions["debug"].max_time_min == 30


@pytest.mark.parametrize("text,minutes", [
    ("UNLIMITED", None), ("INFINITE", None), ("30", 30), ("30:00", 30), ("30:01", 31), ("2:00:00", 120),
    ("1-00:00:00", 1440), ("2-12", 3600), ("1-01:30", 1530), ("0:59", 1)])
def test_slurm_time_limits_in_minutes(text, minutes):
    assert cl.minutes(text) == minutes


@pytest.mark.parametrize("bad", ["1h", "-5", "1:2:3:4", "soon"])
def test_a_time_limit_we_cannot_read_is_refused(bad):
    with pytest.raises(ValueError, match="not a SLURM time"):
        cl.minutes(bad)


@pytest.mark.parametrize("gres,gpus", [
    ("(null)", 0), ("", 0), ("gpu:4", 4), ("gpu:a100:4(S:0-1)", 4), ("gpu:v100:2,gpu:k80:1", 3),
    ("gpu:tesla:8(S:0,1)", 8), ("mps:200,gpu:2", 2), ("gpu", 1)])
def test_gpus_in_sinfo_gres(gres, gpus):
    assert cl.gres_gpus(gres) == gpus


def test_gpu_partitions_from_node_lines():
    sinfo = "g01|gpu|64|515000|gpu:a100:4(S:0-1)\ng02|gpu|64|515000|gpu:a100:8(S:0-1)\nc01|cpu*|128|256000|(null)\n"
    parts = ("PartitionName=gpu Default=NO MaxTime=2-00:00:00 Nodes=g[01-02] State=UP\n"
             "PartitionName=cpu Default=YES MaxTime=UNLIMITED Nodes=c01 State=UP\n")
    p = cl.parse_partitions(parts, sinfo)
    assert (p["gpu"].gpus_per_node, p["gpu"].max_time_min, p["gpu"].default) == (8, 2880, False)
    assert (p["cpu"].gpus_per_node, p["cpu"].cpus_per_node, p["cpu"].default) == (0, 128, True)


def test_submit_limits_from_sacctmgr():
    assoc = "lab|||normal|\nlab|gpu|normal,long|long|500\n"
    qos = "normal|1000\nlong|200\n"
    assert cl.parse_submit_limits(assoc, qos, None) == (500, "association lab's MaxSubmitJobs=500 (sacctmgr)")
    assert cl.parse_submit_limits(assoc, qos, "long") == (200, "QOS long's MaxSubmitJobsPerUser=200 (sacctmgr)")
    assert cl.parse_submit_limits("lab||||\n", "normal|\n", None) == (None, "")


def test_max_array_tasks_and_enforcement():
    config = "MaxArraySize = 100001\nSchedulerParameters = bf_interval=1,max_array_tasks=1000\n" \
             "AccountingStorageType = accounting_storage/slurmdbd\nAccountingStorageEnforce = associations,limits,qos\n"
    c = cl.parse_cluster(config, "", "", held_text="alice|PENDING\nalice|COMPLETED\nbob|RUNNING\n", user="alice",
                         assoc_text="lab||normal||\n", qos_text="normal|300\n")
    assert cl.array_size(c) == 1000 and c.jobs_held == 3 and c.my_jobs == 1
    assert c.max_submit == 300 and cl.submit_capacity(c)[0] == 299


# ------------------------------------------------------------------------------- fitting a sweep to them

@pytest.mark.parametrize("jobs,size,arrays", [
    (2700, 1001, [1001, 1001, 698]), (12, 5, [5, 5, 2]), (10, 5, [5, 5]), (1, 5, [1]), (3, 1, [1, 1, 1])])
def test_the_tasks_are_cut_into_arrays_within_MaxArraySize(jobs, size, arrays):
    sub = plan_submission(Launcher(), jobs, cl.Cluster(max_array_size=size, partitions=captured().partitions))
    got = sub.arrays()
    assert [len(r) for r in got] == arrays
    assert [t for r in got for t in r] == list(range(jobs)), "every task in exactly one array, in order"
    assert all(len(r) - 1 <= size - 1 for r in got), "array task ids 0 … MaxArraySize-1"


def test_the_whole_paper_fits_a_stock_slurm():
    """2,700 runs at SLURM's default MaxArraySize=1001: three arrays, nothing refused."""
    sub = plan_submission(Launcher(), 2700, captured())
    assert sub.problems == () and [len(r) for r in sub.arrays()] == [1001, 1001, 698]


@pytest.mark.parametrize("k,tasks,arrays", [(1, 2700, [1001, 1001, 698]), (25, 108, [108]), (1000, 3, [3])])
def test_runs_per_task_shrinks_the_arrays(k, tasks, arrays):
    sub = plan_submission(Launcher(runs_per_task=k), 2700, captured())
    assert sub.tasks == tasks and [len(r) for r in sub.arrays()] == arrays


@pytest.mark.parametrize("size,capacity,k", [(1001, None, 3), (5, None, 540), (1001, 500, 6), (1001, 10000, 3)])
def test_auto_runs_per_task_raises_K_until_one_array_and_the_submit_limit_fit(size, capacity, k):
    c = cl.Cluster(max_array_size=size, partitions=captured().partitions,
                   max_submit=capacity, max_submit_source="QOS normal's MaxSubmitJobsPerUser")
    sub = plan_submission(Launcher(auto=True), 2700, c)
    assert sub.runs_per_task == k and sub.asked_runs_per_task == 1 and sub.problems == ()
    assert len(sub.arrays()) == 1 and sub.tasks <= min(size, capacity or size)
    assert plan_submission(Launcher(runs_per_task=600, auto=True), 2700, c).asked_runs_per_task is None  # enough


@pytest.mark.parametrize("params,needle", [
    ({"timeout_min": 60}, "hydra.launcher.timeout_min=60 is above partition debug's MaxTime of 30 min"),
    ({"gpus_per_node": 1}, "hydra.launcher.gpus_per_node=1 but partition debug has no GPUs"),
    ({"gres": "gpu:2"}, "hydra.launcher.gpus_per_node=2 but partition debug has no GPUs"),
    ({"cpus_per_task": 64}, "hydra.launcher.cpus_per_task=64 but partition debug's nodes have at most 2 CPUs"),
    ({"mem_gb": 4096}, "hydra.launcher.mem_gb=4096 but partition debug's nodes have at most"),
    ({"partition": "gpu"}, "no SLURM partition 'gpu'; available: debug"),
])
def test_a_request_that_cannot_fit_names_the_limit_and_the_setting(params, needle):
    sub = plan_submission(Launcher(**{"timeout_min": 20, **params}), 12, captured("config-small.txt", "partition-small.txt"))
    assert len(sub.problems) == 1 and needle in sub.problems[0], sub.problems


def test_too_many_tasks_for_the_submit_limits_unless_K_may_rise():
    c = cl.Cluster(max_job_count=100, jobs_held=40, partitions=captured().partitions)
    sub = plan_submission(Launcher(), 61, c)
    assert len(sub.problems) == 1 and "61 array tasks exceed the controller's MaxJobCount=100" in sub.problems[0]
    assert "hydra.launcher.auto_runs_per_task=true" in sub.problems[0]
    assert plan_submission(Launcher(), 60, c).problems == ()
    auto = plan_submission(Launcher(auto=True), 61, c)
    assert auto.problems == () and auto.runs_per_task == 2 and auto.tasks == 31


def test_a_submission_counts_tasks_not_runs():
    sub = Submission(jobs=7, runs_per_task=3, array_size=2, cluster=cl.Cluster())
    assert sub.tasks == 3 and [list(r) for r in sub.arrays()] == [[0, 1], [2]]


def test_reading_the_cluster_and_costing_a_sweep_need_no_torch():
    """asym-status and the dry run's planning parts load without torch (checked in a fresh interpreter)."""
    import subprocess
    import sys
    code = "import sys, asym.launcher.cluster, asym.launcher.cost; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_without_slurm_commands_a_slurm_sweep_is_one_line_before_anything_is_written(asym_train, tmp_path,
                                                                                      monkeypatch):
    from conftest import assert_one_error_line
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    res = asym_train("-m", "model=SGD", "lr_mult=10,1", "dataset=digits", "hydra/launcher=slurm",
                     f"tracking.uri=sqlite:///{tmp_path}/m.db")
    assert_one_error_line(res, "sbatch/scontrol/sinfo/squeue not found: submit from a SLURM login node", tmp_path)
