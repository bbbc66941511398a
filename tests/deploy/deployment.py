"""A local Flower deployment for the tests: SuperLink, SuperNodes, ``flwr run``.

Every process is started here, recorded with its descendants (the SuperLink and
each SuperNode start a detached ``flower-superexec``, which starts the
ServerApp/ClientApp processes) and ended by PID, so a test leaves nothing behind.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ports import free_port

BINARIES = ("flower-superlink", "flower-supernode", "flwr")


def binary(name: str) -> str | None:
    """The Flower command installed beside this Python (not a shim), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.is_file() else shutil.which(name)


def missing_binaries() -> list[str]:
    """Flower's commands that are not installed."""
    return [name for name in BINARIES if binary(name) is None]


def descendants(pid: int) -> list[int]:
    """All processes below ``pid``, read from /proc (no psutil here)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Launched:
    """A process this test started, with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    known: set[int] = field(default_factory=set)

    def remember_children(self) -> None:
        """Record the process tree now: detached children outlive their parent."""
        if self.proc.poll() is None:
            self.known.update(descendants(self.proc.pid))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Deployment:
    """Starts Flower processes with a private ``FLWR_HOME`` and stops them all."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.home = root / "flwr-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **env, "FLWR_HOME": str(self.home)}
        self.env.pop("WANDB_API_KEY", None)
        self.launched: list[Launched] = []
        self._watch = threading.Event()
        self._watcher = threading.Thread(target=self._remember_loop, daemon=True)
        self._watcher.start()

    def _remember_loop(self) -> None:
        """Keep recording process trees: ClientApp processes come and go."""
        while not self._watch.wait(0.5):
            for item in list(self.launched):
                item.remember_children()

    def start(self, name: str, args: list[str]) -> Launched:
        """Start ``args`` with its output in ``<root>/<name>.log``."""
        log_path = self.root / f"{name}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.root,
            )
        item = Launched(name, proc, log_path)
        self.launched.append(item)
        return item

    def superlink(self, port: int, tls: Certificates | None, auth: bool) -> Launched:
        """A SuperLink serving its Fleet, Control and Runtime APIs on ``port``.

        Flower 1.42 serves all three over HTTP on one ``--host``/``--port``;
        runtime dependency installation would rebuild the environment with uv.
        """
        args = [
            binary("flower-superlink") or "flower-superlink",
            "--disable-runtime-dependency-installation",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        if tls is None:
            args.append("--insecure")
        else:
            args += [
                "--ssl-ca-certfile",
                str(tls.ca_cert),
                "--ssl-certfile",
                str(tls.server_cert),
                "--ssl-keyfile",
                str(tls.server_key),
            ]
        if auth:
            args.append("--enable-supernode-auth")
        link = self.start("superlink", args)
        wait_for_port(port, link)
        return link

    def supernode(
        self,
        name: str,
        superlink: str,
        node_config: str,
        *,
        ca_cert: Path | None = None,
        private_key: Path | None = None,
    ) -> Launched:
        """A SuperNode; TLS when ``ca_cert`` is given, authenticated with a key."""
        args = [
            binary("flower-supernode") or "flower-supernode",
            "--superlink",
            superlink,
            "--node-config",
            node_config,
        ]
        if ca_cert is None:
            args.append("--insecure")
        else:
            args += ["--root-certificates", str(ca_cert)]
        if private_key is not None:
            args += ["--auth-supernode-private-key", str(private_key)]
        for _ in range(3):  # its own Runtime API port, for its ClientApp processes
            runtime_port = free_port()
            node = self.start(name, [*args, "--port", str(runtime_port)])
            if not lost_port(node, runtime_port):
                return node
        raise RuntimeError(f"{name} found no free port:\n{node.log()[-3000:]}")

    def connection(self, name: str, port: int, ca_cert: Path | None = None) -> None:
        """Write a SuperLink connection into this deployment's Flower config."""
        lines = ["[superlink]", f'default = "{name}"', "", f"[superlink.{name}]"]
        lines.append(f'address = "127.0.0.1:{port}"')
        if ca_cert is None:
            lines.append("insecure = true")
        else:
            lines.append(f'root-certificates = "{ca_cert}"')
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI with this deployment's Flower config."""
        return subprocess.run(
            [binary("flwr") or "flwr", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=timeout,
        )

    def run_status(self, connection: str, run_id: str) -> str:
        """``flwr ls``'s status of a run, e.g. ``finished:completed``."""
        proc = self.flwr("ls", connection, "--run-id", run_id, "--format", "json")
        try:
            return json.loads(proc.stdout)["runs"][0]["status"]
        except (ValueError, KeyError, IndexError):
            return f"unknown ({proc.stdout[-300:]} {proc.stderr[-300:]})"

    def wait_for_run(
        self, connection: str, run_id: str, results: Path, timeout: float
    ) -> str:
        """Wait until the run finishes; its final status.

        Polls for ``results.json`` (cheap) and asks ``flwr ls`` now and then, so a
        failed run ends the wait early.
        """
        deadline = time.monotonic() + timeout
        next_ask = time.monotonic() + 20
        while time.monotonic() < deadline:
            if results.is_file() or time.monotonic() > next_ask:
                status = self.run_status(connection, run_id)
                if status.startswith("finished"):
                    return status
                next_ask = time.monotonic() + 15
            time.sleep(1)
        return f"timed out after {timeout:g} s: {self.run_status(connection, run_id)}"

    def logs(self) -> str:
        """Every process's log tail, for an assertion message."""
        return "\n".join(
            f"--- {item.name} (rc {item.proc.poll()})\n{item.log()[-2500:]}"
            for item in self.launched
        )

    def stop(self) -> None:
        """End every process started here and all their descendants, by PID."""
        self._watch.set()
        self._watcher.join(timeout=5)
        pids: list[int] = []
        for item in self.launched:
            item.remember_children()
            pids += [item.proc.pid, *sorted(item.known)]
        signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and alive(pids):
            time.sleep(0.2)
        signal_all(alive(pids), signal.SIGKILL)
        for item in self.launched:
            try:
                item.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def alive(pids: Iterable[int]) -> list[int]:
    """The PIDs still running (zombies count as gone)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.append(pid)
    return running


def listening(port: int, proc: Launched, timeout: float = 60) -> bool | None:
    """Wait until something accepts connections on ``port`` (True), ``proc``
    exits (False) or ``timeout`` passes (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.3)
    return None


def wait_for_port(port: int, proc: Launched, timeout: float = 60) -> None:
    """Wait until something accepts connections on ``port``."""
    up = listening(port, proc, timeout)
    if not up:
        why = "exited" if up is False else f"did not listen on {port}"
        raise RuntimeError(f"{proc.name} {why}:\n{proc.log()[-3000:]}")


def lost_port(proc: Launched, port: int, timeout: float = 60) -> bool:
    """Whether ``proc`` exited because another process took ``port`` first.

    Any other exit (a refused SuperNode) is for the caller to check.
    """
    exited = listening(port, proc, timeout) is False
    return exited and "address already in use" in proc.log()


def wait_for_exit(proc: Launched, timeout: float) -> int | None:
    """The process's exit code, or None if it still runs after ``timeout``."""
    try:
        return proc.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


@dataclass
class Certificates:
    """A private CA and a server certificate it signed for 127.0.0.1/localhost."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def make_certificates(folder: Path) -> Certificates:
    """Make a CA and a SuperLink certificate, as ``openssl`` would (README)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedlight test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    certs = Certificates(
        folder / "ca.crt", folder / "server.pem", folder / "server.key"
    )
    certs.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    certs.server_key.write_bytes(_pem_key(server_key))
    return certs


def make_node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's P-384 key pair, OpenSSH format (``ssh-keygen -t ecdsa -b 384``)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = folder / name
    public = folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return private, public


class Relay:
    """A TCP relay in front of the SuperLink that keeps every byte it forwards.

    A SuperNode connected through it shows exactly what travels on the wire,
    without root rights or a packet capture.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        #: per connection: (SuperNode -> SuperLink bytes, SuperLink -> SuperNode bytes)
        self.streams: list[tuple[bytearray, bytearray]] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def upstream(self) -> bytes:
        """Everything the SuperNode sent."""
        with self._lock:
            return b"".join(bytes(up) for up, _ in self.streams)

    @property
    def downstream(self) -> bytes:
        """Everything the SuperNode received."""
        with self._lock:
            return b"".join(bytes(down) for _, down in self.streams)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            up, down = bytearray(), bytearray()
            with self._lock:
                self.streams.append((up, down))
            for src, dst, seen in ((client, server, up), (server, client, down)):
                threading.Thread(
                    target=self._pump, args=(src, dst, seen), daemon=True
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, seen: bytearray) -> None:
        try:
            while chunk := src.recv(65536):
                with self._lock:
                    seen.extend(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop accepting; open connections end with their peers."""
        self._closed = True
        self._server.close()
