"""Launch scripts: dry runs print the right srun / ray / python commands; shellcheck is clean."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from g2rpo_verl.launch.node_loss import describe_nodes, lost_node_report
from g2rpo_verl.launch.ray_wait import HeadConnection, wait_for_cluster
from support.tools import shellcheck_binary

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
SHELL_SCRIPTS = sorted([*SCRIPTS.glob("*.sh"), *SCRIPTS.glob("*.sbatch")])


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script):
    proc = subprocess.run(
        [shellcheck_binary(), "--external-sources", "--severity=style", str(script)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_launchers_exist():
    names = {p.name for p in SCRIPTS.iterdir()}
    assert {"train_single_node.sh", "submit_ray_job.sh", "ray_runtime_env.yaml", "slurm_multinode.sbatch"} <= names


def dry_run(script: str, env: dict[str, str], *args: str) -> list[list[str]]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full_env.update(env, DRY_RUN="1", HOME="/home/u")
    proc = subprocess.run(
        ["bash", str(SCRIPTS / script), *args], env=full_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


def slurm_env(nodes: int, **extra) -> dict[str, str]:
    hosts = [f"gpu{i:02d}" for i in range(1, nodes + 1)]
    env = {
        "SLURM_JOB_NODELIST": f"gpu[01-{nodes:02d}]",
        "SLURM_NNODES": str(nodes),
        "SLURM_GPUS_ON_NODE": "8",
        "SLURM_CPUS_PER_TASK": "96",
        "SLURM_SUBMIT_DIR": str(ROOT),
        "DRY_RUN_HOSTNAMES": " ".join(hosts),
    }
    env.update(extra)
    return env


def hydra_args(cmd: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in cmd if "=" in a)


@pytest.mark.parametrize("nodes", [1, 4])
def test_slurm_dry_run(nodes):
    lines = dry_run("slurm_multinode.sbatch", slurm_env(nodes), "trainer.total_epochs=2")
    starts = [line for line in lines if "ray" in line and "start" in line]
    heads = [line for line in starts if "--head" in line]
    workers = [line for line in starts if "--head" not in line]
    assert len(heads) == 1 and len(workers) == nodes - 1
    (head,) = heads
    assert head[:6] == ["srun", "--nodes=1", "--ntasks=1", "--cpus-per-task=96", "-w", "gpu01"] and head[-1] == "&"
    assert sorted(w[5] for w in workers) == [f"gpu{i:02d}" for i in range(2, nodes + 1)]
    for line in starts:
        assert "--num-gpus=8" in line and "--num-cpus=96" in line and "--block" in line
    for worker in workers:
        assert "--address=gpu01:6379" in worker

    # env exported before the first `ray start` (verl #158)
    first_start = lines.index(head)
    exported = {line[1].split("=")[0] for line in lines[:first_start] if line[0] == "export"}
    assert {"RAY_AUTH_MODE", "NCCL_DEBUG", "PYTHONUNBUFFERED"} <= exported

    # barrier before the trainer: all nodes and GPUs
    (wait,) = [line for line in lines if "g2rpo_verl.launch.ray_wait" in line]
    assert wait[wait.index("--nodes") + 1] == str(nodes) and wait[wait.index("--gpus") + 1] == str(8 * nodes)
    (trainer,) = [line for line in lines if "verl.trainer.main_ppo" in line]
    (pre,) = [line for line in lines if "g2rpo_verl.launch.preflight" in line]
    assert lines.index(wait) < lines.index(pre) < lines.index(trainer)
    assert trainer[:6] == ["srun", "--overlap", "--nodes=1", "--ntasks=1", "-w", "gpu01"]
    args = hydra_args(trainer)
    assert args["trainer.nnodes"] == str(nodes) and args["trainer.n_gpus_per_node"] == "8"
    assert args["--config-path"] == str(ROOT / "configs") and args["--config-name"] == "g2rpo_qwen3vl8b"
    assert args["data.train_files"] == "/home/u/data/g2rpo/train.parquet" and args["trainer.total_epochs"] == "2"
    assert hydra_args(pre) == args and pre[pre.index("--ray-address") + 1] == "gpu01:6379"


def test_slurm_gpu_count_forms_and_errors():
    lines = dry_run("slurm_multinode.sbatch", slurm_env(2, SLURM_GPUS_ON_NODE="", SLURM_GPUS_PER_NODE="h100:4"))
    assert all("--num-gpus=4" in line for line in lines if "start" in line)
    env = {k: v for k, v in slurm_env(2).items() if k != "SLURM_CPUS_PER_TASK"}
    lines = dry_run("slurm_multinode.sbatch", {**env, "SLURM_CPUS_ON_NODE": "48"})
    assert all("--num-cpus=48" in line for line in lines if "start" in line)

    bad = subprocess.run(
        ["bash", str(SCRIPTS / "slurm_multinode.sbatch")],
        env={**os.environ, **slurm_env(3), "DRY_RUN": "1", "DRY_RUN_HOSTNAMES": "gpu01 gpu02"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "expands to 2 hosts, SLURM_NNODES=3" in bad.stderr


def test_slurm_head_address_is_the_first_non_loopback_ipv4():
    def first(words: str) -> subprocess.CompletedProcess:
        script = f"source {shlex.quote(str(SCRIPTS / 'common.sh'))}; first_ipv4 {words}"
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True)

    assert first("fe80::1ff:fe23:4567:890a 127.0.1.1 10.1.2.3 192.168.0.9").stdout == "10.1.2.3\n"
    assert first("2001:db8::1 172.16.0.4").stdout == "172.16.0.4\n"
    for no_ipv4 in ("127.0.1.1 ::1", "", "gpu01"):
        proc = first(no_ipv4)
        assert proc.returncode == 1 and proc.stdout == ""
    lines = dry_run("slurm_multinode.sbatch", slurm_env(2, HEAD_NODE_IP="10.9.8.7"))
    (head,) = [line for line in lines if "--head" in line]
    assert "--node-ip-address=10.9.8.7" in head
    assert not any("hostname" in line for line in lines)  # an explicit address is not looked up


def test_slurm_steps_get_the_cpus_memory_guidance_and_ray_stops_on_exit():
    lines = dry_run("slurm_multinode.sbatch", slurm_env(3))
    for start in [line for line in lines if "start" in line]:
        assert "--cpus-per-task=96" in start  # srun does not inherit sbatch's -c (Slurm >= 22.05)
    stops = [line for line in lines if line[-3:] == ["ray", "stop", "--force"]]
    assert [s[s.index("-w") + 1] for s in stops] == ["gpu01", "gpu02", "gpu03"]
    (trainer,) = [line for line in lines if "verl.trainer.main_ppo" in line]
    assert lines.index(trainer) < lines.index(stops[0])  # the trap runs at exit
    assert "#SBATCH --mem=0" in (SCRIPTS / "slurm_multinode.sbatch").read_text().splitlines()


def test_slurm_missing_gpu_count_gives_the_message_not_an_unbound_variable():
    env = {k: v for k, v in slurm_env(2).items() if k != "SLURM_GPUS_ON_NODE"}
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "slurm_multinode.sbatch")],
        env={**full_env, **env, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "no GPU count (request --gpus-per-node" in proc.stderr
    assert "unbound variable" not in proc.stderr


@pytest.mark.parametrize("script,env", [("slurm_multinode.sbatch", "slurm"), ("submit_ray_job.sh", "ray")])
def test_multinode_launchers_pass_an_absolute_checkpoint_dir(script, env):
    base = slurm_env(2) if env == "slurm" else {"NNODES": "2"}
    lines = dry_run(script, base)
    text = " ".join(" ".join(line) for line in lines)
    (value,) = {part.split("=", 1)[1] for part in shlex.split(text) if part.startswith("trainer.default_local_dir=")}
    assert value.startswith("/") and value.endswith("/g2rpo_qwen3vl8b")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run(
        ["bash", str(SCRIPTS / script)],
        env={**full_env, **base, "DRY_RUN": "1", "CHECKPOINT_DIR": "checkpoints"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "must be absolute" in proc.stderr


def test_slurm_wandb_mode_is_not_forced_online():
    lines = dry_run("slurm_multinode.sbatch", slurm_env(1))
    assert not any(line[:1] == ["export"] and line[1].startswith("WANDB_MODE=") for line in lines)
    lines = dry_run("slurm_multinode.sbatch", slurm_env(1, WANDB_MODE="offline"))
    assert ["export", "WANDB_MODE=offline"] in lines


def test_slurm_script_keeps_nodes_as_an_array():
    text = (SCRIPTS / "slurm_multinode.sbatch").read_text()
    assert 'mapfile -t nodes_array < <(scontrol show hostnames "$SLURM_JOB_NODELIST")' in text
    assert 'nodes_array=("$nodes")' not in text  # verl #548


def test_single_node_dry_run():
    lines = dry_run("train_single_node.sh", {"CONFIG": "grpo_qwen3vl8b", "N_GPUS": "4", "DATA_DIR": "/d"}, "a.b=1")
    assert [line[2] for line in lines] == ["g2rpo_verl.launch.preflight", "verl.trainer.main_ppo"]
    args = hydra_args(lines[1])
    assert args["--config-name"] == "grpo_qwen3vl8b" and args["trainer.n_gpus_per_node"] == "4"
    assert args["data.val_files"] == "/d/val.parquet" and args["a.b"] == "1" and args["trainer.nnodes"] == "1"
    skipped = dry_run("train_single_node.sh", {"SKIP_PREFLIGHT": "1"})
    assert len(skipped) == 1 and skipped[0][2] == "verl.trainer.main_ppo"


def test_ray_job_submit_dry_run():
    (cmd,) = dry_run("submit_ray_job.sh", {"RAY_ADDRESS": "http://head:8265", "NNODES": "2", "NO_WAIT": "1"}, "x=1")
    assert cmd[:3] == ["ray", "job", "submit"] and "--no-wait" in cmd
    assert cmd[cmd.index("--address") + 1] == "http://head:8265"
    assert cmd[cmd.index("--runtime-env") + 1] == str(SCRIPTS / "ray_runtime_env.yaml")
    assert cmd[-3:-1] == ["bash", "-c"]
    preflight, trainer = (shlex.split(part) for part in cmd[-1].split(" && "))
    assert preflight[:5] == ["python3", "-m", "g2rpo_verl.launch.preflight", "--ray-address", "auto"]
    assert trainer[:3] == ["python3", "-m", "verl.trainer.main_ppo"]
    assert "--config-path=$PWD/configs" in trainer  # expanded in the job's working_dir
    args = hydra_args(trainer)
    assert args["trainer.nnodes"] == "2" and args["trainer.n_gpus_per_node"] == "8" and args["x"] == "1"


def test_runtime_env():
    env = yaml.safe_load((SCRIPTS / "ray_runtime_env.yaml").read_text())
    assert env["working_dir"] == "."
    assert env["env_vars"]["VERL_USE_EXTERNAL_MODULES"] == "g2rpo_verl.verl_hooks.autoload"
    assert ".venv" in env["excludes"]


# --- ray_wait ----------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_ray_wait_until_every_node_joined():
    states = iter([RuntimeError("no head"), (["a"], 8.0), (["a", "b"], 8.0), (["a", "b"], 16.0)])

    def state():
        s = next(states)
        if isinstance(s, Exception):
            raise s
        return s

    clock, logs = FakeClock(), []
    assert wait_for_cluster(
        state, nodes=2, gpus=16, timeout_s=60, poll_s=5, clock=clock, sleep=clock.sleep, log=logs.append
    )
    assert logs[0].startswith("ray_wait: cluster not reachable yet") and logs[-1].endswith("ready")
    assert clock.now == 15


def test_ray_wait_times_out_naming_the_nodes_that_joined():
    clock, logs = FakeClock(), []
    ok = wait_for_cluster(lambda: (["10.0.0.1"], 8.0), 4, 32, 30, 5, clock, clock.sleep, logs.append)
    assert not ok and logs[-1] == "ray_wait: timed out after 30s; joined: ['10.0.0.1']"


def test_ray_wait_gives_up_on_a_head_that_never_answers():
    # ray.init retries an unreachable GCS without end; the connection thread may hang, the wait may not
    never = threading.Event()
    head = HeadConnection("10.9.9.9:6379", connect=lambda address: never.wait(), patience_s=0.01)
    clock, logs = FakeClock(), []
    assert not wait_for_cluster(head.state, 2, 2, 30, 5, clock, clock.sleep, logs.append)
    assert (
        logs[0] == "ray_wait: cluster not reachable yet (ConnectionError: no answer from the Ray head at 10.9.9.9:6379)"
    )
    assert logs[-1] == "ray_wait: timed out after 30s; joined: []" and clock.now == 30
    assert head.hanging and not head.connected
    never.set()


def test_ray_wait_retries_a_failed_connection_then_queries():
    attempts = []

    def connect(address):
        attempts.append(address)
        if len(attempts) == 1:
            raise ConnectionError("GCS refused")

    head = HeadConnection("h:1", connect=connect, query=lambda: (["h"], 1.0))
    with pytest.raises(ConnectionError, match="GCS refused"):
        head.state()
    assert head.state() == (["h"], 1.0) and head.state() == (["h"], 1.0)
    assert attempts == ["h:1", "h:1"] and head.connected and not head.hanging


def test_ray_wait_cli_ends_with_a_clear_error_when_nothing_listens():
    """The real module, the real ray.init, a port nobody listens on: exit 1 within the timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    cmd = [
        sys.executable,
        "-m",
        "g2rpo_verl.launch.ray_wait",
        "--address",
        f"127.0.0.1:{port}",
        "--nodes",
        "2",
        "--timeout",
        "6",
        "--poll",
        "2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"the Ray head at 127.0.0.1:{port} did not answer within 6s" in proc.stdout


# --- node_loss ---------------------------------------------------------------------------------
def node(i, alive, reason=""):
    return {
        "NodeID": f"{i:02d}" * 14,
        "Alive": alive,
        "NodeManagerAddress": "10.0.0.%d" % i,
        "NodeManagerHostname": f"gpu{i:02d}",
        "NodeManagerPort": 7000 + i,
        "DeathReasonMessage": reason,
    }


def test_node_loss_names_the_dead_node_and_how_to_resume():
    line = describe_nodes([node(1, True), node(2, False, "health check failed")], expected=2)
    assert line.startswith(
        "node_loss: 1 of 2 node(s) lost: gpu02 (10.0.0.2:7002, node 02020202): health check failed. "
    )
    assert "same command" in line and "trainer.resume_mode=auto" in line
    assert describe_nodes([node(1, True), node(2, True)], expected=2) is None
    # gone from the table before Ray marked it dead: still a lost node
    assert "1 of 2 node(s) lost: only 1 of 2 nodes still registered" in describe_nodes([node(1, True)], expected=2)


def test_node_loss_waits_for_ray_to_mark_the_node_dead():
    tables = iter([[node(1, True), node(2, True)]] * 3 + [[node(1, True), node(2, False)]])
    clock = FakeClock()
    line = lost_node_report(lambda: next(tables), 2, grace_s=60, poll_s=5, clock=clock, sleep=clock.sleep)
    assert "1 of 2 node(s) lost: gpu02" in line and clock.now == 15


def test_node_loss_other_failures_and_a_lost_head():
    clock = FakeClock()
    line = lost_node_report(lambda: [node(1, True), node(2, True)], 2, 10, 5, clock, clock.sleep)
    assert (
        line
        == "node_loss: all 2 node(s) alive 10s after the failure: the trainer failed for another reason (its error is above)."
    )

    def gone():
        raise ConnectionError("no answer from the Ray head at h:1")

    line = lost_node_report(gone, 2, 10, 5, clock, clock.sleep)
    assert line.startswith(
        "node_loss: the Ray head does not answer (ConnectionError: no answer from the Ray head at h:1)"
    )
    assert "trainer.resume_mode=auto" in line
