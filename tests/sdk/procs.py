"""Real processes for the SDK suite: etcd and tlsfleet-control, on free ports, with
readiness probes instead of sleeps, and logs kept for failure messages."""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    """A port the kernel just handed out; startup retries cover the rare reuse race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def control_binary() -> Path:
    bin_dir = Path(os.environ.get("TLSFLEET_BIN_DIR", REPO / "target" / "debug"))
    path = bin_dir / "tlsfleet-control"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"{path} is missing: build it first: cargo build --workspace "
            "(or set TLSFLEET_BIN_DIR to the directory holding tlsfleet-control)"
        )
    return path


def etcd_binary() -> str:
    for candidate in (os.environ.get("TLSFLEET_ETCD"), "/usr/bin/etcd", shutil.which("etcd")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "etcd is not installed: apt-get install -y etcd-server "
        "(or set TLSFLEET_ETCD to an etcd binary)"
    )


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _get(url: str, timeout: float = 1.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def _wait(proc: subprocess.Popen, log: Path, what: str, ready) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log_tail(log)}")
        if ready():
            return
        time.sleep(0.05)  # poll interval of the readiness probe, not a wait for readiness
    raise RuntimeError(f"{what} not ready after {START_TIMEOUT}s:\n{log_tail(log)}")


class Etcd:
    """A single-node etcd with its own data directory."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.data = workdir / "etcd-data"
        self.log = workdir / "etcd.log"
        self.proc = None
        self.port = None
        self.peer_port = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Etcd":
        last = None
        for _ in range(3):
            if self.port is None or last is not None:
                self.port, self.peer_port = free_port(), free_port()
            try:
                self._start_once()
                return self
            except RuntimeError as e:  # a port taken in between: try other ports
                last = e
        raise last

    def restart(self) -> None:
        """Starts again on the same ports and data (after `kill`)."""
        self._start_once()

    def _start_once(self) -> None:
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            etcd_binary(), "--name", "n1", "--data-dir", str(self.data),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"n1={peer}",
            "--heartbeat-interval", "10", "--election-timeout", "100",
            "--logger", "zap", "--log-level", "warn",
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

        def healthy():
            status, body = _get(f"{client}/health")
            return status == 200 and b'"health":"true"' in body

        try:
            _wait(self.proc, self.log, "etcd", healthy)
        except RuntimeError:
            self.kill()
            raise

    def kill(self) -> None:
        # SIGKILL: a lone node takes seconds to stop on SIGTERM (docs/STACK.md).
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)


class Control:
    """A tlsfleet-control process."""

    def __init__(self, workdir: Path, store: str, credentials: Path, domains=("oss.test",),
                 extra=()):
        self.workdir = workdir
        self.store = store
        self.credentials = credentials
        self.domains = domains
        self.extra = tuple(extra)
        self.log = workdir / "control.log"
        self.proc = None
        self.http_port = None
        self.grpc_port = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> "Control":
        binary = control_binary()
        last = None
        for _ in range(3):
            self.http_port, self.grpc_port = free_port(), free_port()
            args = [
                str(binary), "--store", self.store,
                "--http-listen", f"127.0.0.1:{self.http_port}",
                "--grpc-listen", f"127.0.0.1:{self.grpc_port}",
                "--credentials", str(self.credentials),
            ]
            for d in self.domains:
                args += ["--domain", d]
            args += list(self.extra)
            env = dict(os.environ)
            env.setdefault("RUST_LOG", "info,tlsfleet_control=debug")
            env["NO_COLOR"] = "1"
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                _wait(self.proc, self.log, "tlsfleet-control", self.ready)
                return self
            except RuntimeError as e:
                last = e
                self.stop(check=False)
                if "cannot listen" not in str(e):
                    raise
        raise last

    def ready(self) -> bool:
        status, _ = _get(f"{self.endpoint}/-/readyz")
        return status == 200

    def alive(self) -> bool:
        status, _ = _get(f"{self.endpoint}/-/healthz", timeout=5.0)
        return self.proc.poll() is None and status == 200

    def stop(self, check: bool = True) -> None:
        """SIGTERM, then wait: with `check`, a server that does not stop cleanly fails."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            if check:
                raise RuntimeError(
                    f"tlsfleet-control did not stop within {STOP_TIMEOUT}s of SIGTERM:\n"
                    f"{log_tail(self.log)}"
                )
            return
        if check and code != 0:
            raise RuntimeError(f"tlsfleet-control exited with {code}:\n{log_tail(self.log)}")
