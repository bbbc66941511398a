"""A private Ray cluster of several nodes on loopback, stopped by PID.

``ray stop`` kills every Ray process on the machine (other people's runs too),
so each node here is a ``ray start ... --block`` subprocess that we own; on exit
we signal exactly those processes and kill what is left of their trees.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ports import free_port

RAY = str(Path(sys.executable).with_name("ray"))


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, read from /proc (no psutil needed)."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = {pid}
    while frontier:
        frontier = {c for c, p in parent_of.items() if p in frontier}
        found += sorted(frontier)
    return found


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class LoopbackCluster:
    """A head and ``workers`` worker nodes on 127.0.0.1, ``num_cpus`` CPUs each."""

    num_cpus: int = 1
    workers: int = 1
    object_store_bytes: int = 150 * 1024**2
    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    _logs: list[IO[str]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, *args: str) -> None:
        # Own short temp dir per node: Unix socket paths must stay < 108 chars,
        # and the head's address file lands here, not in the shared /tmp/ray.
        temp_dir = tempfile.mkdtemp(prefix="flray-")
        self.dirs.append(temp_dir)
        log = open(Path(temp_dir) / "ray-start.log", "w")  # noqa: SIM115
        self._logs.append(log)
        cmd = [
            RAY,
            "start",
            *args,
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.num_cpus}",
            "--num-gpus=0",
            f"--object-store-memory={self.object_store_bytes}",
            f"--temp-dir={temp_dir}",
            # Fixed defaults (52365) would collide between nodes and users.
            f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
        ]
        env = {**os.environ, "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
        env.pop("RAY_ADDRESS", None)
        self.procs.append(
            subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C in pytest reaches us, not them
            )
        )

    def start(self, timeout: float = 180.0) -> LoopbackCluster:
        """Start the head, then the workers; return once every node is alive."""
        try:
            self._start(
                "--head",
                f"--port={self.port}",
                f"--ray-client-server-port={free_port()}",
                "--include-dashboard=false",
            )
            self.wait_for(1, timeout)
            for _ in range(self.workers):
                self._start(f"--address={self.address}")
            self.wait_for(1 + self.workers, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for(self, nodes: int, timeout: float) -> None:
        """Wait until ``nodes`` nodes are alive (a fresh driver asks the GCS)."""
        probe = (
            "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"ray start exited early:\n{self.tail()}")
            out = subprocess.run(
                [sys.executable, "-c", probe, self.address],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if out.returncode == 0 and out.stdout.split()[-1:] == [str(nodes)]:
                return
            time.sleep(1)
        raise TimeoutError(f"{nodes} Ray nodes not up in {timeout:g} s:\n{self.tail()}")

    def tail(self) -> str:
        """The end of every node's ``ray start`` output."""
        return "\n".join(
            (Path(d) / "ray-start.log").read_text()[-2000:] for d in self.dirs
        )

    def pids(self) -> list[int]:
        """Every process we started: the ``ray start`` processes and descendants."""
        return [p for proc in self.procs for p in [proc.pid, *descendants(proc.pid)]]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM our ``ray start`` processes (each stops its node's processes),
        then SIGKILL what is left of their trees. Nothing else is touched."""
        pids = self.pids()
        for proc in reversed(self.procs):  # workers first, the head last
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        for pid in pids:
            if running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for log in self._logs:
            log.close()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    def __enter__(self) -> LoopbackCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
