"""A real one-node SLURM cluster on this machine for the session (tests/slurm/cluster.sh).

The cluster starts the first time a test asks for it and stops at the end of the session. Where
it cannot start (no SLURM packages, not root, a daemon that fails), the tests that need it skip
with the reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

CLUSTER = Path(__file__).resolve().parent / "cluster.sh"


def _free_port_pair() -> int:
    """A port P with P and P+1 free (slurmctld, slurmd), so a cluster left running elsewhere on
    this machine does not clash."""
    import socket

    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        try:
            with socket.socket() as other:
                other.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    return 16817


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """SLURM_CONF of a running cluster (also exported to os.environ for every child process)."""
    directory = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_TEST_PORT": str(_free_port_pair())}
    started = subprocess.run(["bash", str(CLUSTER), "start", str(directory)], capture_output=True, text=True, env=env)
    if started.returncode != 0:
        why = ((started.stderr or started.stdout).strip().splitlines() or ["?"])[0]
        pytest.skip(f"no local SLURM cluster: {why}")
    conf = str(directory / "slurm.conf")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    subprocess.run(["bash", str(CLUSTER), "stop", str(directory)], capture_output=True)
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
