"""How training processes are started: one CPU process here, many GPUs (or nodes) elsewhere.

The profile says how many processes it means and which launcher (``launch``: ``python``, ``torchrun`` or
``deepspeed``; processes per node and nodes), so that the global batch a profile states is the one it trains with.
This resource adds where they run (addresses, rendezvous endpoint, host file, environment) and may override the
profile's kind and counts for one deployment. Dagster Pipes runs the command; only rank 0 opens the Pipes channel.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from nyx.settings import LaunchSettings


class TrainingLauncher(dg.ConfigurableResource):
    kind: str | None = Field(default=None, description="python, torchrun or deepspeed; None: the profile's launch.kind")
    nproc_per_node: int | None = Field(default=None, description="None: the profile's launch.processes_per_node")
    nnodes: int | None = Field(default=None, description="None: the profile's launch.nodes")
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = Field(
        default=None,
        description="None: a free port of this machine, picked per launch (single node); several "
        "nodes need a fixed one",
    )
    rdzv_endpoint: str | None = Field(default=None, description="host:port for torchrun's c10d rendezvous (multi-node)")
    hostfile: str | None = Field(default=None, description="DeepSpeed host file for multi-node runs")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for every rank (NCCL_*, etc.)")

    def resolved(self, launch: LaunchSettings | None = None) -> LaunchSettings:
        """The profile's launch settings with this resource's overrides applied."""
        from nyx.settings import LaunchSettings

        base = launch or LaunchSettings()
        return LaunchSettings(
            kind=self.kind or base.kind,
            processes_per_node=self.nproc_per_node or base.processes_per_node,
            nodes=self.nnodes or base.nodes,
        )

    def _port(self, nnodes: int) -> int:
        if self.master_port is not None:
            return self.master_port
        if nnodes > 1:
            raise dg.Failure(
                f"{nnodes} nodes need a fixed master_port (and master_addr) in the launcher resource, "
                "one that every node can reach"
            )
        return _free_port()  # per launch: two pipelines (or a test beside a run) on one machine never collide

    def command(self, module: str, args: list[str], launch: LaunchSettings | None = None) -> list[str]:
        """The command that starts ``python -m module args`` in the processes ``launch`` (the profile's) asks for."""
        py = sys.executable
        how = self.resolved(launch)
        kind, nproc, nnodes = how.kind, how.processes_per_node, how.nodes

        if kind == "python":
            if nproc != 1 or nnodes != 1:
                raise dg.Failure(
                    f"launcher kind 'python' runs one process, {nproc * nnodes} asked for: use "
                    "'torchrun' or 'deepspeed' for more"
                )
            return [py, "-m", module, *args]
        if kind == "torchrun":
            cmd = [py, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--nnodes={nnodes}"]
            if nnodes > 1:
                endpoint = self.rdzv_endpoint or f"{self.master_addr}:{self._port(nnodes)}"
                cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", f"--node_rank={self.node_rank}"]
            else:
                cmd += [f"--master_addr={self.master_addr}", f"--master_port={self._port(nnodes)}"]
            return [*cmd, "-m", module, *args]
        if nnodes > 1 and not self.hostfile:
            raise dg.Failure(
                f"launcher kind 'deepspeed' with nnodes={nnodes} needs a hostfile listing the nodes "
                "(without one DeepSpeed would silently train on this node only)"
            )
        ds = Path(py).with_name("deepspeed")
        cmd = [
            str(ds) if ds.exists() else "deepspeed",
            f"--num_gpus={nproc}",
            f"--master_addr={self.master_addr}",
            f"--master_port={self._port(nnodes)}",
        ]
        if self.hostfile:
            cmd += [f"--hostfile={self.hostfile}", f"--num_nodes={nnodes}"]
        return [*cmd, "--module", module, *args]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
