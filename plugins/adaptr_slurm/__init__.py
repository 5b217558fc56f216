"""Built-in executor `slurm`: a detached run as a SLURM batch job that survives preemption.

`adaptr train STAGE ... --executor slurm [--nodes N --gpus-per-node G --time T --partition P
--account A --qos Q --profile NAME]` writes `<run_dir>/slurm.sbatch` and submits it with `sbatch`;
the job's id is recorded on the run. The job asks for SIGUSR1 some seconds before its end
(`--signal=USR1@90`); on it the run saves a verified checkpoint, records a resume run and requeues
the job (`scontrol requeue`), and the requeued job continues from that checkpoint (docs/slurm.md).
"""

from adaptr import Executor, hookimpl

from .executor import cancel, check, launch, poll, resolve


@hookimpl
def register_executors(register):
    register(Executor("slurm", None, check=check, launch=launch, poll=poll, cancel=cancel, resolve=resolve, journal=True,
                      help="a SLURM batch job (sbatch; several nodes through srun), requeued and "
                           "resumed on a time-limit warning or preemption"))
