"""How training processes are started: one CPU process here, many GPUs (or nodes) elsewhere.

The asset asks for a command; this resource decides whether it runs under plain Python, ``torchrun`` (single node or
multi-node with a rendezvous endpoint) or the ``deepspeed`` launcher (multi-node with a host file). Dagster Pipes
runs the command; only rank 0 opens the Pipes channel.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field


class TrainingLauncher(dg.ConfigurableResource):
    kind: Literal["python", "torchrun", "deepspeed"] = "python"
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29511
    rdzv_endpoint: str | None = Field(default=None, description="host:port for torchrun's c10d rendezvous (multi-node)")
    hostfile: str | None = Field(default=None, description="DeepSpeed host file for multi-node runs")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for every rank (NCCL_*, etc.)")

    def command(self, module: str, args: list[str]) -> list[str]:
        py = sys.executable
        if self.kind == "python":
            if self.nproc_per_node != 1 or self.nnodes != 1:
                raise dg.Failure("launcher kind 'python' runs one process: use 'torchrun' or 'deepspeed' for more")
            return [py, "-m", module, *args]
        if self.kind == "torchrun":
            cmd = [py, "-m", "torch.distributed.run", f"--nproc_per_node={self.nproc_per_node}", f"--nnodes={self.nnodes}"]
            if self.nnodes > 1:
                endpoint = self.rdzv_endpoint or f"{self.master_addr}:{self.master_port}"
                cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", f"--node_rank={self.node_rank}"]
            else:
                cmd += [f"--master_addr={self.master_addr}", f"--master_port={self.master_port}"]
            return [*cmd, "-m", module, *args]
        if self.nnodes > 1 and not self.hostfile:
            raise dg.Failure(f"launcher kind 'deepspeed' with nnodes={self.nnodes} needs a hostfile listing the nodes "
                             "(without one DeepSpeed would silently train on this node only)")
        ds = Path(py).with_name("deepspeed")
        cmd = [str(ds) if ds.exists() else "deepspeed", f"--num_gpus={self.nproc_per_node}",
               f"--master_addr={self.master_addr}", f"--master_port={self.master_port}"]
        if self.hostfile:
            cmd += [f"--hostfile={self.hostfile}", f"--num_nodes={self.nnodes}"]
        return [*cmd, "--module", module, *args]
