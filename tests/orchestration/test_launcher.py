"""The commands the training launcher builds: the number of processes each profile means, plain Python, single- and
multi-node torchrun (checked against torchrun's own argument parser), and DeepSpeed with a host file."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import pytest


def _torchrun_args(cmd: list[str]):
    from torch.distributed.run import get_args_parser

    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    return get_args_parser().parse_args(cmd[3:])


def test_launcher_starts_the_processes_the_profile_means():
    """paper: 8 processes under torchrun (20 per GPU x 8 = 160 in-batch candidates); rehearsal: 2; sample: 1."""
    from nyx.settings import load_profile
    from orchestration.launcher import TrainingLauncher

    paper = _torchrun_args(TrainingLauncher().command("nyx.train.tracked", [], load_profile("paper").launch))
    assert paper.nproc_per_node == "8" and paper.nnodes == "1"
    assert load_profile("paper").stage1.train.per_device_batch_size * load_profile("paper").launch.world_size == 160
    rehearsal = _torchrun_args(TrainingLauncher().command("nyx.train.tracked", [], load_profile("rehearsal").launch))
    assert rehearsal.nproc_per_node == "2"
    assert TrainingLauncher().command("m", [], load_profile("sample").launch) == [sys.executable, "-m", "m"]
    # a deployment may override the counts (e.g. 4 GPUs); the trainer then logs the global batch it got
    assert (
        _torchrun_args(TrainingLauncher(nproc_per_node=4).command("m", [], load_profile("paper").launch)).nproc_per_node
        == "4"
    )


def test_launcher_builds_python_and_single_node_torchrun_commands():
    from orchestration.launcher import TrainingLauncher

    assert TrainingLauncher().command("nyx.train.tracked", ["--config", "c.json"]) == [
        sys.executable,
        "-m",
        "nyx.train.tracked",
        "--config",
        "c.json",
    ]
    with pytest.raises(dg.Failure, match="torchrun"):
        TrainingLauncher(nproc_per_node=2).command("nyx.train.tracked", [])

    cmd = TrainingLauncher(kind="torchrun", nproc_per_node=8).command("nyx.train.tracked", ["--config", "c.json"])
    args = _torchrun_args(cmd)
    # one node: a free port per launch, so two pipelines on one machine do not collide (EADDRINUSE)
    other = _torchrun_args(TrainingLauncher(kind="torchrun", nproc_per_node=8).command("m", []))
    assert any(a.startswith("--master_port=") for a in cmd) and int(args.master_port) >= 1024
    assert int(other.master_port) >= 1024
    assert _torchrun_args(TrainingLauncher(kind="torchrun", master_port=29511).command("m", [])).master_port == 29511
    assert args.nproc_per_node == "8" and args.nnodes == "1"
    assert args.module and args.training_script == "nyx.train.tracked"
    assert args.training_script_args == ["--config", "c.json"]


def test_launcher_builds_multi_node_torchrun_with_rendezvous():
    from orchestration.launcher import TrainingLauncher

    launcher = TrainingLauncher(
        kind="torchrun", nproc_per_node=8, nnodes=4, node_rank=2, rdzv_endpoint="trainer-0.nyx:29400"
    )
    args = _torchrun_args(launcher.command("nyx.train.tracked", ["--config", "c.json"]))
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("4", "8", 2)
    assert args.rdzv_backend == "c10d" and args.rdzv_endpoint == "trainer-0.nyx:29400"
    assert args.training_script == "nyx.train.tracked" and args.training_script_args == ["--config", "c.json"]
    # several nodes without an endpoint or a fixed port: refused (a port picked here means nothing to other nodes)
    with pytest.raises(dg.Failure, match="fixed master_port"):
        TrainingLauncher(kind="torchrun", nnodes=2).command("m", [])
    # without an explicit endpoint the master address/port is the rendezvous point
    args = _torchrun_args(
        TrainingLauncher(kind="torchrun", nnodes=2, master_addr="10.0.0.1", master_port=29500).command("m", [])
    )
    assert args.rdzv_endpoint == "10.0.0.1:29500"


def test_launcher_builds_deepspeed_command_with_hostfile(tmp_path):
    from deepspeed.launcher.runner import parse_args

    from orchestration.launcher import TrainingLauncher

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=8\nnode-b slots=8\n")
    launcher = TrainingLauncher(
        kind="deepspeed", nproc_per_node=8, nnodes=2, master_addr="node-a", master_port=29600, hostfile=str(hostfile)
    )
    cmd = launcher.command("nyx.train.tracked", ["--config", "c.json"])
    assert Path(cmd[0]).name == "deepspeed"
    args = parse_args(cmd[1:])
    assert (args.num_gpus, args.num_nodes, args.hostfile) == (8, 2, str(hostfile))
    assert (args.master_addr, args.master_port) == ("node-a", 29600)
    assert args.module and args.user_script == "nyx.train.tracked" and args.user_args == ["--config", "c.json"]
    # several nodes without a host file would silently train on one node
    with pytest.raises(dg.Failure, match="hostfile"):
        TrainingLauncher(kind="deepspeed", nproc_per_node=8, nnodes=2).command("nyx.train.tracked", [])
