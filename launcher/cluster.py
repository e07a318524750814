"""What a SLURM cluster allows, read from its controller before anything is submitted.

``read_cluster()`` asks the real commands — ``scontrol show config`` (``MaxArraySize``, ``MaxJobCount``,
``SchedulerParameters=max_array_tasks``, accounting), ``scontrol show partition -o`` (``MaxTime``, nodes,
the default partition), ``sinfo -N`` (CPUs, memory and GPU gres of each node), ``squeue`` (jobs already held)
and, only where accounting exists and enforces limits, ``sacctmgr`` (the QOS's and association's
``MaxSubmitJobs``). The parsers are pure functions of the commands' text (tested on captured output).

``problems(request, cluster)`` lists, one line each, what ``sbatch`` would refuse — each naming the limit and
the launcher setting that fixes it; ``array_size(cluster)`` is how many tasks one job array may hold.
No torch, no Hydra: ``asym-status`` and the dry run use it too.
"""
from __future__ import annotations

import getpass
import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field

DEFAULT_MAX_ARRAY_SIZE = 1001   # SLURM's default MaxArraySize (task ids 0 … 1000)
DEFAULT_MAX_JOB_COUNT = 10000   # SLURM's default MaxJobCount
UNLIMITED = None
TIMEOUT_S = 60   # seconds any SLURM command may take before we give up on the controller
# SLURM's job states while a job is still the scheduler's (squeue lists it): waiting, and running or finishing
SLURM_QUEUED = ("PENDING", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESIZING")
SLURM_RUNNING = ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING")


class ClusterError(RuntimeError):
    """The controller could not be asked (no SLURM commands, or one failed); one line."""


@dataclass(frozen=True)
class Partition:
    """One partition as the controller describes it; node figures are the largest of its nodes."""

    name: str
    default: bool = False
    max_time_min: int | None = UNLIMITED       # MaxTime in minutes (None: UNLIMITED)
    nodes: str = ""                            # the node list, as scontrol prints it
    state: str = "UP"
    cpus_per_node: int | None = None           # sinfo %c
    mem_mb_per_node: int | None = None         # sinfo %m (RealMemory, MB)
    gpus_per_node: int = 0                     # GPUs in the gres of its best-equipped node (sinfo %G)


@dataclass(frozen=True)
class Cluster:
    """The limits a submission must fit (``read_cluster``); ``None`` where there is no limit."""

    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE    # MaxArraySize: array task ids 0 … MaxArraySize-1
    max_array_tasks: int | None = None              # SchedulerParameters max_array_tasks (tasks per array)
    max_job_count: int = DEFAULT_MAX_JOB_COUNT      # MaxJobCount: jobs the controller holds (each task counts)
    accounting: bool = True                         # AccountingStorageType is not accounting_storage/none
    enforce: str = "none"                           # AccountingStorageEnforce
    partitions: dict[str, Partition] = field(default_factory=dict)
    jobs_held: int = 0                              # jobs the controller holds now (squeue -t all -r)
    my_jobs: int = 0                                # this user's pending and running jobs
    max_submit: int | None = None                   # MaxSubmitJobs (QOS per user, or the association)
    max_submit_source: str = ""                     # where max_submit comes from, for the error line

    @property
    def default_partition(self) -> str | None:
        return next((p.name for p in self.partitions.values() if p.default), None)

    def partition(self, name: str | None) -> Partition | None:
        return self.partitions.get(name or self.default_partition or "")


# ------------------------------------------------------------------------------------------------- parsers

def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config`` → {Key: value}: its ``Key = value`` lines."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def parse_records(text: str) -> list[dict[str, str]]:
    """``scontrol show … -o`` → one {Key: value} per line (values hold no spaces; ``a=b=c`` keeps ``b=c``)."""
    records = []
    for line in text.splitlines():
        rec = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                rec[key] = value
        if rec:
            records.append(rec)
    return records


def minutes(value: str) -> int | None:
    """A SLURM time limit in minutes: ``UNLIMITED``/``INFINITE`` → None; ``MM``, ``MM:SS``, ``HH:MM:SS``,
    ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS`` (seconds round up). ValueError on anything else."""
    v = value.strip()
    if v.upper() in ("UNLIMITED", "INFINITE", "NONE", ""):
        return UNLIMITED
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", v)
    if not m:
        raise ValueError(f"not a SLURM time: {value!r}")
    days, a, b, c = (int(g) if g is not None else None for g in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        h, mi, s = a, b or 0, c or 0
    elif c is not None:   # HH:MM:SS
        h, mi, s = a, b, c
    elif b is not None:   # MM:SS
        h, mi, s = 0, a, b
    else:                 # MM
        h, mi, s = 0, a, 0
    return (days or 0) * 1440 + h * 60 + mi + math.ceil(s / 60)


def gres_gpus(gres: str) -> int:
    """GPUs in a node's gres string as ``sinfo %G`` prints it: ``gpu:4``, ``gpu:a100:4(S:0-1)``,
    ``gpu:v100:2,gpu:k80:1``, ``(null)`` → 0."""
    total = 0
    for item in re.split(r",(?![^()]*\))", gres or ""):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu":
            count = parts[-1] if len(parts) > 1 else "1"
            total += int(count) if count.isdigit() else 1
    return total


def parse_partitions(scontrol_text: str, sinfo_text: str) -> dict[str, Partition]:
    """Partitions from ``scontrol show partition -o`` and ``sinfo -h -N -o '%N|%P|%c|%m|%G'`` (node lines)."""
    nodes: dict[str, list[tuple[int | None, int | None, int]]] = {}
    for line in sinfo_text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        _, part, cpus, mem, gres = fields
        num = (lambda s: int(re.match(r"\d+", s).group()) if re.match(r"\d+", s) else None)
        nodes.setdefault(part.rstrip("*"), []).append((num(cpus), num(mem), gres_gpus(gres)))
    out = {}
    for rec in parse_records(scontrol_text):
        name = rec.get("PartitionName")
        if not name:
            continue
        mine = nodes.get(name, [])
        best = (lambda i: max((n[i] for n in mine if n[i] is not None), default=None))
        out[name] = Partition(name, rec.get("Default", "NO").upper() == "YES", minutes(rec.get("MaxTime", "UNLIMITED")),
                              rec.get("Nodes", ""), rec.get("State", "UP"), best(0), best(1), best(2) or 0)
    return out


def scheduler_parameter(config: dict[str, str], name: str) -> str | None:
    """One ``SchedulerParameters`` option, e.g. ``max_array_tasks``."""
    for item in config.get("SchedulerParameters", "").split(","):
        key, _, value = item.partition("=")
        if key.strip() == name:
            return value.strip()
    return None


def parse_submit_limits(assoc_text: str, qos_text: str, qos: str | None) -> tuple[int | None, str]:
    """The tightest MaxSubmitJobs for this user and the setting it comes from.

    ``assoc_text``: ``sacctmgr -n -P show assoc where user=U format=Account,Partition,QOS,DefaultQOS,MaxSubmit``;
    ``qos_text``: ``sacctmgr -n -P show qos format=Name,MaxSubmitJobsPerUser``. ``qos``: the one the job asks
    for (``hydra.launcher.qos``), else the association's default QOS, else ``normal``."""
    limits: list[tuple[int, str]] = []
    default_qos = None
    for line in assoc_text.splitlines():
        f = line.split("|")
        if len(f) >= 5:
            default_qos = default_qos or (f[3] or None)
            if f[4].isdigit():
                limits.append((int(f[4]), f"association {f[0]}'s MaxSubmitJobs={f[4]} (sacctmgr)"))
    wanted = qos or default_qos or "normal"
    for line in qos_text.splitlines():
        f = line.split("|")
        if len(f) >= 2 and f[0] == wanted and f[1].isdigit():
            limits.append((int(f[1]), f"QOS {wanted}'s MaxSubmitJobsPerUser={f[1]} (sacctmgr)"))
    return min(limits) if limits else (None, "")


def parse_cluster(config_text: str, partition_text: str, sinfo_text: str, held_text: str = "", user: str = "",
                  assoc_text: str = "", qos_text: str = "", qos: str | None = None) -> Cluster:
    """A ``Cluster`` from the commands' output (``held_text``: ``squeue -h -r -t all -o '%u|%T'``)."""
    config = parse_config(config_text)
    accounting = config.get("AccountingStorageType", "accounting_storage/none") != "accounting_storage/none"
    enforce = config.get("AccountingStorageEnforce", "none")
    held = [line.split("|") for line in held_text.splitlines() if "|" in line]
    max_submit, source = parse_submit_limits(assoc_text, qos_text, qos) if accounting else (None, "")
    tasks = scheduler_parameter(config, "max_array_tasks")
    return Cluster(
        max_array_size=int(config.get("MaxArraySize", DEFAULT_MAX_ARRAY_SIZE)),
        max_array_tasks=int(tasks) if tasks and tasks.isdigit() else None,
        max_job_count=int(config.get("MaxJobCount", DEFAULT_MAX_JOB_COUNT)),
        accounting=accounting, enforce=enforce,
        partitions=parse_partitions(partition_text, sinfo_text),
        jobs_held=len(held),
        my_jobs=sum(1 for u, state in held if u == user and state in (*SLURM_QUEUED, *SLURM_RUNNING)),
        max_submit=max_submit if enforces_limits(enforce) else None, max_submit_source=source)


def enforces_limits(enforce: str) -> bool:
    """Whether ``AccountingStorageEnforce`` makes SLURM enforce association and QOS limits (limits, safe)."""
    return any(w in ("limits", "safe") for w in enforce.lower().replace(" ", "").split(","))


# ----------------------------------------------------------------------------------------------- the query

def _run(*cmd: str) -> str:
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ClusterError(f"{cmd[0]} failed: {e}") from None
    if res.returncode != 0:
        why = (res.stderr or res.stdout).strip().splitlines()
        raise ClusterError(f"{' '.join(cmd[:3])} failed: {why[0] if why else f'exit {res.returncode}'}")
    return res.stdout


def have_slurm() -> bool:
    return all(shutil.which(c) for c in ("sbatch", "scontrol", "sinfo", "squeue"))


def read_cluster(qos: str | None = None) -> Cluster:
    """Ask the controller. ClusterError (one line) when the SLURM commands are missing or fail."""
    if not have_slurm():
        raise ClusterError("sbatch/scontrol/sinfo/squeue not found: submit from a SLURM login node, "
                           "or use hydra/launcher=local")
    config_text = _run("scontrol", "show", "config")
    user = getpass.getuser()
    assoc_text = qos_text = ""
    config = parse_config(config_text)
    if (config.get("AccountingStorageType", "accounting_storage/none") != "accounting_storage/none"
            and enforces_limits(config.get("AccountingStorageEnforce", "none")) and shutil.which("sacctmgr")):
        try:
            assoc_text = _run("sacctmgr", "-n", "-P", "show", "assoc", f"where user={user}",
                              "format=Account,Partition,QOS,DefaultQOS,MaxSubmit")
            qos_text = _run("sacctmgr", "-n", "-P", "show", "qos", "format=Name,MaxSubmitJobsPerUser")
        except ClusterError:  # slurmdbd down: sbatch is then the judge of these limits
            pass
    return parse_cluster(config_text, _run("scontrol", "show", "partition", "-o"),
                         _run("sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G"),
                         _run("squeue", "-h", "-r", "-t", "all", "-o", "%u|%T"), user, assoc_text, qos_text, qos)


# ------------------------------------------------------------------------------------------ what must fit

@dataclass(frozen=True)
class Request:
    """What a sweep asks of SLURM (the launcher's settings, named as the user sets them)."""

    tasks: int                          # array tasks in all
    partition: str | None = None
    timeout_min: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    gpus_per_node: int | None = None


def array_size(cluster: Cluster) -> int:
    """Tasks one job array may hold: ``MaxArraySize`` (ids 0 … MaxArraySize-1), or ``max_array_tasks`` if
    smaller; 1 when arrays are disabled (``MaxArraySize=0``: each task is then its own job)."""
    limits = [cluster.max_array_size] + ([cluster.max_array_tasks] if cluster.max_array_tasks else [])
    return max(1, min(limits))


def submit_capacity(cluster: Cluster) -> tuple[int, str]:
    """How many more jobs (array tasks) this user may queue now, and the limit that says so: the controller's
    ``MaxJobCount`` less the jobs it holds, or the user's ``MaxSubmitJobs`` less their queued jobs if tighter."""
    options = [(cluster.max_job_count - cluster.jobs_held,
                f"the controller's MaxJobCount={cluster.max_job_count} (slurm.conf; {cluster.jobs_held} jobs held now)")]
    if cluster.max_submit is not None:
        options.append((cluster.max_submit - cluster.my_jobs,
                        f"{cluster.max_submit_source}, {cluster.my_jobs} of your jobs queued now"))
    return min(options)


def problems(request: Request, cluster: Cluster) -> list[str]:
    """What ``sbatch`` would refuse, one line each (empty: it fits). Array size never is a problem: a sweep
    larger than one array is submitted as several (``array_size``)."""
    out = []
    part = cluster.partition(request.partition)
    if part is None:
        available = ", ".join(cluster.partitions) or "none"
        if request.partition:
            return [f"no SLURM partition '{request.partition}'; available: {available}"]
        return [f"this cluster has no default partition: set hydra.launcher.partition (one of {available})"]
    where = f"partition {part.name}"
    if part.max_time_min is not None and request.timeout_min and request.timeout_min > part.max_time_min:
        out.append(f"hydra.launcher.timeout_min={request.timeout_min} is above {where}'s MaxTime of "
                   f"{part.max_time_min} min (scontrol show partition): set hydra.launcher.timeout_min={part.max_time_min} "
                   "or less (and runs_per_task to match), or choose another partition with hydra.launcher.partition")
    if request.gpus_per_node and request.gpus_per_node > part.gpus_per_node:
        have = "has no GPUs" if not part.gpus_per_node else f"has at most {part.gpus_per_node} GPUs per node"
        out.append(f"hydra.launcher.gpus_per_node={request.gpus_per_node} but {where} {have} (sinfo gres): choose "
                   "a GPU partition with hydra.launcher.partition, or lower hydra.launcher.gpus_per_node")
    if request.cpus_per_task and part.cpus_per_node and request.cpus_per_task > part.cpus_per_node:
        out.append(f"hydra.launcher.cpus_per_task={request.cpus_per_task} but {where}'s nodes have at most "
                   f"{part.cpus_per_node} CPUs (sinfo): set hydra.launcher.cpus_per_task={part.cpus_per_node} or less")
    if request.mem_gb and part.mem_mb_per_node and request.mem_gb * 1024 > part.mem_mb_per_node:
        out.append(f"hydra.launcher.mem_gb={request.mem_gb:g} but {where}'s nodes have at most "
                   f"{part.mem_mb_per_node} MB (sinfo RealMemory): set hydra.launcher.mem_gb="
                   f"{part.mem_mb_per_node // 1024} or less")
    capacity, limit = submit_capacity(cluster)
    if request.tasks > capacity:
        out.append(f"{request.tasks} array tasks exceed {limit}: {max(capacity, 0)} more may be queued; set "
                   f"hydra.launcher.runs_per_task so that jobs ÷ runs_per_task ≤ {max(capacity, 0)}, or "
                   "hydra.launcher.auto_runs_per_task=true")
    return out


def auto_runs_per_task(n_jobs: int, k: int, cluster: Cluster) -> int:
    """The least runs_per_task ≥ ``k`` whose tasks fit one job array and the submit limits.
    ValueError (one line) when not even one task may be queued."""
    capacity, limit = submit_capacity(cluster)
    room = min(array_size(cluster), capacity)
    if room < 1:
        raise ValueError(f"no job may be queued now: {limit}")
    return max(k, math.ceil(n_jobs / room))
