"""Real servers for end-to-end tests: gunicorn, and Apache httpd with Debian's mod_wsgi.

Reusable from any test (``import e2e`` — tests/ is on sys.path under pytest)::

    settings = e2e.write_settings(tmp_path / "site.py", DEVICE_URL=emu.url, JOURNAL_PATH=...)
    with e2e.start_gunicorn(settings) as srv:          # started and answering
        status, headers, body = e2e.request("POST", srv.url + "/kkt", body=..., headers=...)

    with e2e.start_apache(settings_values, vhost="kkt.conf") as srv:  # apache/kkt.conf, for real
        ...

Rules kept here so that tests need not think about them: servers listen on a free port of
127.0.0.1 only; every wait is bounded; each server runs in its own process group and is
stopped (SIGTERM, then SIGKILL of the whole group) when the ``with`` block ends, on failure
too, and — through PR_SET_PDEATHSIG — even if the test process itself is killed.

Apache: Debian's mod_wsgi embeds the system Python (/usr/bin/python3), and the daemon runs as
www-data, which cannot read /root (where pyenv lives) and maybe not the checkout either. So
the Apache helper deploys the way a sysadmin does: it copies the application (kkt.wsgi,
conf.py, kktapp/) and the system-Python venv that ``make test`` builds (var/apache-venv) into
a world-readable temp directory, writes the site settings there, and starts
``/usr/sbin/apache2 -DFOREGROUND`` with apache/kkt.conf (or kkt-ssl.conf) whose paths and
port are substituted — the shipped vhost file itself is what serves the test.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

#: Bounded waits (seconds). Generous: CI has two cores and may be busy.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
REQUEST_TIMEOUT = 90.0

APACHE_BIN = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
APACHE_USER = "www-data"
APACHE_VENV = Path(os.environ.get("KKT_APACHE_VENV", REPO / "var" / "apache-venv"))
#: What the Apache helper copies as "/var/www/kkt".
APP_FILES = ("kkt.wsgi", "conf.py", "kktapp")


# --- small utilities ---------------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def write_settings(path: str | os.PathLike[str], **settings: Any) -> Path:
    """Write a KKT_SETTINGS file: one ``NAME = repr(value)`` line per setting."""
    path = Path(path)
    lines = ["# Written by tests/e2e.py"]
    lines += [f"{name} = {value!r}" for name, value in settings.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def request(
    method: str,
    url: str,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns (status, headers with lower-case names, body) for any status."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    if isinstance(body, str):
        body = body.encode("utf-8")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child when the thread that started it dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --- a server process --------------------------------------------------------------------------


class ServerProcess:
    """A server started in its own process group, output to a log file, stopped for sure."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        url: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.url = url
        self.log_path = Path(log_path)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.ssl_context = ssl_context
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_logs: list[Path] = []
        self._cleanup: list[Any] = []

    # lifecycle

    def start(self) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self

    def wait_ready(
        self, path: str = "/kkt", timeout: float = START_TIMEOUT, log_line: str | None = None
    ) -> ServerProcess:
        """Wait until the server answers ``GET path`` with any HTTP status (bounded).

        ``log_line``: text the server writes once it has bound its port (gunicorn's "Listening
        at: ..."); until it appears, an answer on the port may come from someone else.
        """
        deadline = time.monotonic() + timeout
        last: Exception | str | None = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc and self.proc.returncode}\n{self.log_tail()}")
            if log_line and log_line not in self._log_text():
                last = f"no {log_line!r} in its output yet"
                time.sleep(0.1)
                continue
            try:
                self.get(path, timeout=5)
                return self
            except (OSError, http.client.HTTPException) as exc:
                last = exc
                time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not answer GET {path} in {timeout:.0f} s ({last})\n{self.log_tail()}")

    def _log_text(self) -> str:
        """The server's output and its extra logs, as one text."""
        parts = []
        for p in [self.log_path, *self.extra_logs]:
            with contextlib.suppress(OSError):
                parts.append(p.read_text(encoding="utf-8", errors="replace"))
        return "\n".join(parts)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the process group, wait (bounded), then SIGKILL whatever is left of it."""
        proc = self.proc
        if proc is not None:
            pgid = proc.pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            # Children (gunicorn workers, mod_wsgi daemons) share the group: none may outlive us.
            deadline = time.monotonic() + timeout
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            self.proc = None
        while self._cleanup:
            with contextlib.suppress(Exception):
                self._cleanup.pop()()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # helpers for tests

    def request(
        self, method: str, path: str, body: bytes | str | None = None, headers: Mapping[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> tuple[int, dict[str, str], bytes]:
        return request(method, self.url + path, body=body, headers=headers, timeout=timeout, context=self.ssl_context)

    def get(self, path: str, headers: Mapping[str, str] | None = None, timeout: float = REQUEST_TIMEOUT):
        return self.request("GET", path, headers=headers, timeout=timeout)

    def post(self, path: str, body: bytes | str, headers: Mapping[str, str] | None = None,
             timeout: float = REQUEST_TIMEOUT):
        return self.request("POST", path, body=body, headers=headers, timeout=timeout)

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the server's output and of its extra logs, for failure messages."""
        out = []
        for p in [self.log_path, *self.extra_logs]:
            if p.exists():
                text = p.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
                out.append(f"--- {p} ---\n" + "\n".join(text))
        return "\n".join(out)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still "exists"; look for any live member of the group.
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


# --- gunicorn ----------------------------------------------------------------------------------


def gunicorn_bin() -> str:
    """gunicorn next to the running interpreter (the project's .venv under make test)."""
    candidate = Path(sys.executable).parent / "gunicorn"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("gunicorn")
    if not found:
        raise RuntimeError("gunicorn not found: run `make test` (it installs requirements.txt into .venv)")
    return found


def start_gunicorn(
    settings: str | os.PathLike[str],
    *,
    port: int | None = None,
    workers: int = 2,
    threads: int = 4,
    timeout: int = 90,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    ready_path: str = "/kkt",
    app_dir: str | os.PathLike[str] = REPO,
    app_spec: str = "kktapp:create_app()",
) -> ServerProcess:
    """Start ``gunicorn 'kktapp:create_app()'`` on 127.0.0.1 with KKT_SETTINGS=settings; wait for it.

    ``app_spec``: another application (``kktapp.asgi:application`` with ``-k asgi`` in extra_args).

    The same command line as the README's systemd unit (gthread workers, worker timeout above
    a receipt's wait). Returns a started, answering server; use it as a context manager.
    """
    settings = Path(settings)
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["KKT_SETTINGS"] = str(settings)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    attempts = 1 if port else 3  # a free port may be taken before gunicorn binds it: try another
    for attempt in range(1, attempts + 1):
        bind_port = port or free_port()
        argv = [
            gunicorn_bin(), app_spec,
            "--bind", f"{HOST}:{bind_port}",
            "--workers", str(workers), "--threads", str(threads),
            "--timeout", str(timeout), "--graceful-timeout", "10",
            "--chdir", str(app_dir),
            "--access-logfile", "-",
            # gunicorn 27 opens a control socket at ~/.gunicorn/gunicorn.ctl by default: one path
            # for every gunicorn of the user, so parallel servers would fight over it.
            "--no-control-socket",
            *extra_args,
        ]
        log = Path(log_path) if log_path else settings.with_name(f"gunicorn-{bind_port}.log")
        srv = ServerProcess("gunicorn", argv, f"http://{HOST}:{bind_port}", log, env=full_env, cwd=app_dir)
        srv.start()
        try:
            return srv.wait_ready(ready_path, log_line=f"Listening at: http://{HOST}:{bind_port}")
        except (RuntimeError, TimeoutError):
            srv.stop()
            if attempt < attempts and "Connection in use" in srv._log_text():
                continue
            raise
        except BaseException:
            srv.stop()
            raise
    raise AssertionError("unreachable")


# --- Apache httpd + mod_wsgi ---------------------------------------------------------------------


class ApacheServer(ServerProcess):
    """An Apache deployment: ``deploy`` (temp root), ``www`` (the app, as /var/www/kkt),
    ``data_dir`` (journal), ``log_dir`` (Apache logs and LOG_FILE), ``settings_file``."""

    deploy: Path
    www: Path
    data_dir: Path
    log_dir: Path
    settings_file: Path


def apache_missing() -> str | None:
    """Why Apache cannot be started here, or None. `make test` installs all of it."""
    if not os.path.exists(APACHE_BIN):
        return f"{APACHE_BIN} is missing: run `make test` (installs apache2 libapache2-mod-wsgi-py3)"
    if not os.path.exists(f"{APACHE_MODULES}/mod_wsgi.so"):
        return "mod_wsgi.so is missing: run `make test` (installs libapache2-mod-wsgi-py3)"
    if not (APACHE_VENV / "bin" / "python").exists():
        return f"{APACHE_VENV} is missing: run `make test` (builds it from /usr/bin/python3)"
    if os.geteuid() != 0:
        return "the Apache test starts httpd with User www-data and needs root (CI runs as root)"
    return None


_HTTPD_CONF = """\
# Generated by tests/e2e.py: the minimum around {vhost_name}.
ServerRoot "{root}"
ServerName {host}
DefaultRuntimeDir "{run}"
PidFile "{run}/httpd.pid"
User {user}
Group {group}
Listen {host}:{port}{listen_proto}
ErrorLog "{logs}/error.log"
LogLevel warn
LogFormat "%h %l %u %t \\"%r\\" %>s %O \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" combined
StartServers 1
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule reqtimeout_module {modules}/mod_reqtimeout.so
LoadModule wsgi_module {modules}/mod_wsgi.so
{tls_modules}
WSGISocketPrefix "{run}/wsgi"
Include "{vhost}"
"""


def _copy_app(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in APP_FILES:
        s = src / name
        if s.is_dir():
            shutil.copytree(s, dst / name, ignore=ignore)
        else:
            shutil.copy2(s, dst / name)


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link a venv file into the deployment (instant; same inode, same mode), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _make_cert(tls_dir: Path) -> tuple[Path, Path]:
    cert, key = tls_dir / "kkt.crt", tls_dir / "kkt.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={HOST}",
         "-addext", f"subjectAltName=IP:{HOST}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def render_vhost(text: str, substitutions: Mapping[str, str]) -> str:
    """Substitute paths in a shipped vhost file; each one must be there (the test stays honest)."""
    for old, new in substitutions.items():
        if old not in text:
            raise AssertionError(f"the vhost no longer contains {old!r}: update tests/e2e.py with it")
        text = text.replace(old, new)
    return text


def start_apache(
    settings: Mapping[str, Any],
    *,
    vhost: str = "kkt.conf",
    port: int | None = None,
    app_dir: str | os.PathLike[str] = REPO,
    ready_path: str = "/kkt",
) -> ApacheServer:
    """Deploy the application and start a real Apache with apache/<vhost> on 127.0.0.1.

    ``settings`` become the site settings file (KKT_SETTINGS). JOURNAL_PATH and LOG_FILE
    default to the deployment's data/ and log/ directories, writable by www-data. The
    returned :class:`ApacheServer` knows where its deployment, journal and logs are; its
    ``stop()`` also removes the deployment.
    """
    why = apache_missing()
    if why:
        raise RuntimeError(why)
    root = Path(tempfile.mkdtemp(prefix="kkt-apache-"))
    try:
        attempts = 1 if port else 3  # a free port may be taken before Apache binds it: try another
        for attempt in range(1, attempts + 1):
            srv = _apache_attempt(root, settings, vhost, port or free_port(), Path(app_dir), first=attempt == 1)
            srv.start()
            try:
                srv.wait_ready(ready_path, log_line="resuming normal operations")
            except (RuntimeError, TimeoutError):
                srv.stop()
                if attempt < attempts and "Address already in use" in srv._log_text():
                    continue
                raise
            except BaseException:
                srv.stop()
                raise
            srv._cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
            return srv
        raise AssertionError("unreachable")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _apache_attempt(
    root: Path, settings: Mapping[str, Any], vhost: str, port: int, app_dir: Path, first: bool
) -> ApacheServer:
    """Lay out the deployment under ``root`` (once) and write the configuration for ``port``."""
    tls = "ssl" in vhost
    www, venv, etc, data, logs, run, tls_dir = (
        root / d for d in ("www", "venv", "etc", "data", "log", "run", "tls")
    )
    if first:
        os.chmod(root, 0o755)  # www-data must traverse it; mkdtemp makes 0700
        _copy_app(app_dir, www)
        shutil.copytree(APACHE_VENV, venv, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"),
                        copy_function=_link_or_copy)
        for d in (etc, data, logs, run):
            d.mkdir()
        pw = pwd.getpwnam(APACHE_USER)
        for d in (data, logs, run):
            os.chown(d, pw.pw_uid, pw.pw_gid)
        values = {"JOURNAL_PATH": str(data / "journal.sqlite3"), "LOG_FILE": str(logs / "kkt.log")}
        values.update(settings)
        write_settings(etc / "site.py", **values)
        if tls:
            tls_dir.mkdir()
            _make_cert(tls_dir)
    for old_log in (root / "apache-stdout.log", logs / "error.log"):
        old_log.unlink(missing_ok=True)  # a retry must not read the last attempt's words

    subs = {
        "/var/www/kkt": str(www),
        "/opt/kkt/venv": str(venv),
        "<VirtualHost *:443>" if tls else "<VirtualHost *:80>": f"<VirtualHost {HOST}:{port}>",
    }
    ssl_context = None
    tls_modules = ""
    if tls:
        cert, key = tls_dir / "kkt.crt", tls_dir / "kkt.key"
        subs["/etc/ssl/certs/kkt.crt"] = str(cert)
        subs["/etc/ssl/private/kkt.key"] = str(key)
        ssl_context = ssl.create_default_context(cafile=str(cert))
        tls_modules = (
            f"LoadModule socache_shmcb_module {APACHE_MODULES}/mod_socache_shmcb.so\n"
            f"LoadModule ssl_module {APACHE_MODULES}/mod_ssl.so\n"
            f'SSLSessionCache "shmcb:{run}/ssl_scache(512000)"'
        )
    vhost_text = render_vhost((REPO / "apache" / vhost).read_text(encoding="utf-8"), subs)
    (root / vhost).write_text(vhost_text, encoding="utf-8")
    conf = root / "httpd.conf"
    conf.write_text(
        _HTTPD_CONF.format(
            vhost_name=vhost, root=root, host=HOST, run=run, user=APACHE_USER, group=APACHE_USER,
            port=port, listen_proto=" https" if tls else "", logs=logs, modules=APACHE_MODULES,
            tls_modules=tls_modules, vhost=root / vhost,
        ),
        encoding="utf-8",
    )
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "APACHE_LOG_DIR": str(logs),  # the vhost's ${APACHE_LOG_DIR}, as Debian's envvars sets it
        "KKT_SETTINGS": str(etc / "site.py"),  # inherited by the mod_wsgi daemons' os.environ
    }
    check = subprocess.run([APACHE_BIN, "-f", str(conf), "-t"], env=env, capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"apache2 -t rejected the configuration:\n{check.stdout}{check.stderr}\n{vhost_text}")
    scheme = "https" if tls else "http"
    srv = ApacheServer(
        f"apache ({vhost})", [APACHE_BIN, "-f", str(conf), "-DFOREGROUND"], f"{scheme}://{HOST}:{port}",
        root / "apache-stdout.log", env=env, cwd=root, ssl_context=ssl_context,
    )
    srv.deploy, srv.www, srv.data_dir, srv.log_dir, srv.settings_file = root, www, data, logs, etc / "site.py"
    prefix = "kkt-ssl" if tls else "kkt"
    srv.extra_logs = [logs / "error.log", logs / f"{prefix}-error.log", logs / "kkt.log"]
    return srv
