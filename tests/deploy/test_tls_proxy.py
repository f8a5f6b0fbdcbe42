"""The production setup of docs/deploying.rst, run for real.

nginx (Debian's package) terminates TLS with a throwaway certificate, configured
from ``examples/deploy/nginx.conf`` itself (only ports and certificate paths
substituted), in front of the example chat as ``examples/deploy/wsgi.py`` builds
it from ``examples/deploy/chat.env``, and of the Pusher server serving
``examples/deploy/pusher-server.json``. pusher-js 8.6 in Node connects with
``wss://`` through nginx using the options the chat's page renders, subscribes to
a private channel through the chat's auth route (``https://``, through nginx),
and receives an event that the chat's official ``pusher`` client triggers with
``ssl=True``, through nginx too (reference §4, §5.1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import json
import os
import pwd
import queue
import re
import runpy
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from flask import request
from werkzeug.serving import make_server

from examples.chat import create_app
from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.server import WebhookConfig
from flask_pusher.server.cli import apps_from_options
from flask_pusher.server.cli import load_config
from flask_pusher.server.cli import main as server_command
from flask_pusher.views import pusher_options

from ..needs import unavailable
from . import CABundleBackend

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "examples" / "deploy"
CLIENT_JS = Path(__file__).with_name("client.js")
TIMEOUT = 20.0
#: Where nginx is when /usr/sbin is not on a non-root user's PATH.
NGINX_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
#: The template's listen lines, by server_name, and which test port replaces them.
LISTEN = {
    "chat.example.com ws.example.com": ("listen 80;", "http"),
    "chat.example.com": ("listen 443 ssl;", "app"),
    "ws.example.com": ("listen 443 ssl;", "ws"),
}
LIVE = "/etc/letsencrypt/live/chat.example.com/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines, as systemd's ``EnvironmentFile=`` reads them (no quoting used)."""
    lines = path.read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def make_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate it signs for 127.0.0.1; their PEM paths
    (CA, certificate, key)."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, issuer: str, public: Any, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        else:
            san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("Flask-Pusher test CA", "Flask-Pusher test CA", ca_key.public_key(), ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build("127.0.0.1", "Flask-Pusher test CA", key.public_key(), ca_key, False)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def render_site(ports: dict[str, int], upstreams: dict[str, int], cert: Path, key: Path) -> str:
    """``examples/deploy/nginx.conf`` with loopback ports and the test certificate.

    Fails if the template no longer has what is replaced, so the docs' file and
    the tested one cannot part ways.
    """
    text = (DEPLOY / "nginx.conf").read_text()
    seen = []

    def listen(block: re.Match[str]) -> str:
        name = re.search(r"^\s*server_name (.+);$", block.group(0), re.MULTILINE)
        assert name is not None, block.group(0)
        line, port = LISTEN[name.group(1)]
        seen.append(name.group(1))
        assert block.group(0).count(line) == 1, block.group(0)
        local = re.sub(r"listen [0-9]+", f"listen 127.0.0.1:{ports[port]}", line)
        return block.group(0).replace(line, local)

    text = re.sub(r"^server \{$.*?^\}$", listen, text, flags=re.MULTILINE | re.DOTALL)
    assert sorted(seen) == sorted(LISTEN)
    for template, new, count in [
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstreams['app']};", 1),
        ("server 127.0.0.1:6001;", f"server 127.0.0.1:{upstreams['ws']};", 1),
        (f"{LIVE}fullchain.pem", str(cert), 2),
        (f"{LIVE}privkey.pem", str(key), 2),
    ]:
        assert text.count(template) == count, template
        text = text.replace(template, new)
    return text


def nginx_main_config(directory: Path) -> str:
    """The part of Debian's /etc/nginx/nginx.conf the site file needs, under ``directory``."""
    d = directory
    # As root, nginx's workers would run as nobody, who cannot enter pytest's tmp_path.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/site.conf;
}}
"""


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_nginx(directory: Path, site: str, ports: dict[str, int]) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx", path=NGINX_PATH)
    if nginx is None:
        unavailable("needs nginx (Debian: apt-get install nginx).")
    (directory / "site.conf").write_text(site)
    (directory / "nginx.conf").write_text(nginx_main_config(directory))
    error_log = directory / "error.log"
    conf = directory / "nginx.conf"
    proc = subprocess.Popen(
        [nginx, "-p", str(directory), "-c", str(conf), "-e", str(error_log), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"nginx exited with {proc.returncode}: {error_log.read_text()}")
        return all(listening(port) for port in ports.values())

    wait_for(up, "nginx to listen")
    return proc


class Lines:
    """The JSON lines a Node process prints, read in a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.queue: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        for stream, sink in ((proc.stdout, self.queue.put), (proc.stderr, self.stderr.append)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _read(stream: Any, sink: Callable[[str], None]) -> None:
        with stream:
            for line in stream:
                sink(line)

    def next(self) -> dict[str, Any]:
        try:
            line: dict[str, Any] = json.loads(self.queue.get(timeout=TIMEOUT))
        except queue.Empty:
            pytest.fail(f"no line from node in {TIMEOUT} s; stderr: {''.join(self.stderr)}")
        assert "error" not in line, f"{line}; stderr: {''.join(self.stderr)}"
        return line


@pytest.fixture
def node_ready() -> None:
    if shutil.which("node") is None or not (ROOT / "node_modules" / "pusher-js").is_dir():
        unavailable("needs node and `npm ci` (pusher-js in node_modules).")


@pytest.fixture
def stopper() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(TIMEOUT)


def test_pusher_js_through_nginx_with_tls(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    node_ready: None,
    stopper: contextlib.ExitStack,
) -> None:
    ca, cert, key = make_certificate(tmp_path)
    ports = {name: free_port() for name in ("http", "app", "ws")}

    # The Pusher server, serving the apps of examples/deploy/pusher-server.json.
    flask_port = free_port()
    (app_config,) = load_config(str(DEPLOY / "pusher-server.json"))
    hook = WebhookConfig(f"http://127.0.0.1:{flask_port}/pusher/events")
    server = LocalServer([_with_webhooks(app_config, hook)], webhook_delay=0.1).start()

    # The chat, as gunicorn would load it with chat.env, but pointed at nginx's
    # loopback port instead of ws.example.com:443, trusting the throwaway CA.
    env = read_env_file(DEPLOY / "chat.env")
    assert (env["PUSHER_HOST"], env["PUSHER_PORT"], env["PUSHER_SSL"]) == (
        "ws.example.com",
        "443",
        "true",
    )
    env.update(
        PUSHER_HOST="127.0.0.1",
        PUSHER_PORT=str(ports["ws"]),
        PUSHER_BACKEND=f"{CABundleBackend.__module__}:{CABundleBackend.__name__}",
        PUSHER_BACKEND_OPTIONS=json.dumps({"ca_bundle": str(ca)}),
    )
    for name in list(os.environ):
        if name.startswith(("PUSHER_", "FLASK_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app: Flask = runpy.run_path(str(DEPLOY / "wsgi.py"))["app"]
    seen: list[tuple[str, str, str]] = []

    @app.before_request
    def record() -> None:
        forwarded = request.headers.get("X-Forwarded-For", "")
        seen.append((request.scheme, request.remote_addr or "", forwarded))

    http = make_server("127.0.0.1", flask_port, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    stopper.callback(http.server_close)
    stopper.callback(http.shutdown)
    stopper.callback(server.stop)  # first, so that its last webhooks reach the app

    site = render_site(ports, {"app": flask_port, "ws": server.port}, cert, key)
    nginx = start_nginx(tmp_path, site, ports)
    stopper.callback(stop_process, nginx)
    origin = f"https://127.0.0.1:{ports['app']}"

    # Plain HTTP redirects to HTTPS.
    r = requests.get(f"http://127.0.0.1:{ports['http']}/x?y=1", allow_redirects=False, timeout=5)
    assert (r.status_code, r.headers["Location"]) == (301, "https://127.0.0.1/x?y=1")

    # Sign in as a browser would, through nginx; a forged X-Forwarded-For is not believed.
    browser = requests.Session()
    browser.trust_env = False  # else REQUESTS_CA_BUNDLE, if set, wins over .verify
    browser.verify = str(ca)
    forged = {"X-Forwarded-For": "203.0.113.9"}
    r = browser.post(f"{origin}/signin", data={"name": "ann"}, headers=forged, timeout=5)
    assert r.status_code == 200 and "new Pusher(" in r.text, r.text
    assert seen[0] == ("https", "127.0.0.1", "203.0.113.9, 127.0.0.1")
    match = re.search(r"new Pusher\((.*?), (\{.*?\})\);", r.text)
    assert match is not None, r.text
    options = json.loads(match.group(2))
    assert options == {
        "cluster": "mt1",
        "forceTLS": True,
        "wsHost": "127.0.0.1",
        "wsPort": ports["ws"],
        "wssPort": ports["ws"],
        "enabledTransports": ["ws"],
        "channelAuthorization": {"endpoint": "/pusher/auth", "transport": "ajax"},
        "userAuthentication": {"endpoint": "/pusher/user-auth", "transport": "ajax"},
    }

    channel = "private-dm-ann-bob"
    config = {
        "key": json.loads(match.group(1)),
        "options": options,
        "origin": origin,
        "cookie": "; ".join(f"{c.name}={c.value}" for c in browser.cookies),
        "channel": channel,
        "timeout": (TIMEOUT - 5) * 1000,  # node reports its own timeout first
    }
    node = subprocess.Popen(
        ["node", str(CLIENT_JS), json.dumps(config)],
        cwd=ROOT,
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(ca)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stopper.callback(stop_process, node)
    lines = Lines(node)
    ws_url = f"wss://127.0.0.1:{ports['ws']}/app/{app_config.key}?protocol=7&"
    assert lines.next()["connected"].startswith(ws_url)
    assert lines.next() == {"subscribed": channel}

    # The official client with ssl=True through nginx: a signed GET with a query string.
    client = pusher.Pusher(
        app_config.app_id,
        app_config.key,
        app_config.secret,
        host="127.0.0.1",
        port=ports["ws"],
        ssl=True,
        backend=CABundleBackend,
        ca_bundle=str(ca),
    )
    info = client.channel_info(channel, ["subscription_count"])
    assert info == {"occupied": True, "subscription_count": 1}

    # The chat's own client (ssl=True, PUSHER_HOST/PORT) triggers on the DM channel.
    r = browser.post(f"{origin}/dm", json={"to": "bob", "text": "over TLS"}, timeout=5)
    assert r.status_code == 201, r.text
    message = {"from": "ann", "to": "bob", "text": "over TLS"}
    assert lines.next() == {"event": "message", "data": message}
    assert node.wait(TIMEOUT) == 0

    # Everything went through nginx: the upgrade, the auth, the HTTP API calls.
    log = tmp_path / "access.log"

    def logged(pattern: str) -> Callable[[], bool]:
        return lambda: re.search(pattern, log.read_text()) is not None

    key_path = re.escape(f"/app/{app_config.key}?protocol=7")
    wait_for(logged(rf'"GET {key_path}&[^"]* HTTP/1\.1" 101 '), "the WebSocket in the log")
    wait_for(logged(r'"POST /pusher/auth HTTP/1\.1" 200 '), "the auth request in the log")
    events = re.escape(f"/apps/{app_config.app_id}/events?")
    wait_for(logged(rf'"POST {events}[^"]* HTTP/1\.1" 200 '), "the trigger in the log")


def _with_webhooks(app: AppConfig, hook: WebhookConfig) -> AppConfig:
    """``app`` sending its webhooks to ``hook`` instead of gunicorn's port."""
    assert [h.url for h in app.webhooks] == ["http://127.0.0.1:8000/pusher/events"]
    return dataclasses.replace(app, webhooks=[hook])


def test_websocket_timeout_outlasts_the_heartbeat() -> None:
    """nginx must not cut a quiet connection between two pings: pusher-js and the
    server ping after ``activity_timeout`` of silence and wait ``pong_timeout``
    (reference §5.3, §5.4); nginx's own default is 60 s."""
    text = (DEPLOY / "nginx.conf").read_text()
    block = re.search(r"location /app/ \{(.*?)\}", text, re.DOTALL)
    assert block is not None
    defaults = AppConfig("1", "key", "secret")
    needed = defaults.activity_timeout + defaults.pong_timeout
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        value = re.search(rf"{directive} (\d+)s;", block.group(1))
        assert value is not None, directive
        assert int(value.group(1)) > needed, directive


def test_http_api_path_is_passed_as_sent() -> None:
    """The HTTP API's signature covers the path and query (reference §4.1): a
    ``proxy_pass`` with a URI part would make nginx rewrite them."""
    text = (DEPLOY / "nginx.conf").read_text()
    passes = re.findall(r"proxy_pass (\S+);", text)
    assert passes == ["http://chat_app"] + ["http://pusher_server"] * 3


def test_service_unit_uses_the_servers_options() -> None:
    """The unit's ExecStart is ``python -m flask_pusher.server`` with options it has."""
    unit = (DEPLOY / "pusher-server.service").read_text()
    (line,) = re.findall(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    argv = shlex.split(line)
    assert argv[1:3] == ["-m", "flask_pusher.server"]
    argv[argv.index("--config") + 1] = str(DEPLOY / "pusher-server.json")
    params = server_command.make_context(argv[2], argv[3:]).params
    assert (params["host"], params["port"]) == ("127.0.0.1", 6001)
    assert params["trusted_proxies"] == ("127.0.0.1",)  # nginx, on this machine
    apps = apps_from_options(
        params["app_id"], params["key"], params["secret"], params["config"], params["webhooks"]
    )
    assert [a.app_id for a in apps] == ["1001"]


def test_documented_pusher_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``pusher_options()`` gives pusher-js with chat.env, as the docs show it
    (examples/deploy/pusher-options.json)."""
    env = read_env_file(DEPLOY / "chat.env")
    (server_app,) = load_config(str(DEPLOY / "pusher-server.json"))
    assert (env["PUSHER_APP_ID"], env["PUSHER_KEY"], env["PUSHER_SECRET"]) == (
        server_app.app_id,
        server_app.key,
        server_app.secret,
    )
    for name in list(os.environ):
        if name.startswith(("PUSHER_", "FLASK_")):
            monkeypatch.delenv(name)
    app = create_app({k: v for k, v in env.items() if k.startswith("PUSHER_")})
    with app.test_request_context("/"):
        rendered = json.loads(pusher_options())
    documented = json.loads((DEPLOY / "pusher-options.json").read_text())
    assert rendered == documented
