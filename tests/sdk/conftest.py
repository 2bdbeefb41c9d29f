"""Fixtures of the SDK suite: a real tlsfleet-control (embedded store, and etcd) per session,
its credentials, and clients.

Run from the repository root after `cargo build --workspace`:
    python3 -m pytest -q tests/sdk
TLSFLEET_BIN_DIR overrides where tlsfleet-control is (default: target/debug).
"""

import os
import socket
import uuid

import pytest

try:
    import alibabacloud_oss_v2  # noqa: F401
    import oss2  # noqa: F401
except ImportError as e:
    raise ImportError(
        f"{e}: the SDK suite needs the official OSS clients: "
        "python3 -m pip install -r tests/sdk/requirements.txt"
    ) from e

import ossraw
import procs
from sdkenv import DOMAIN, KEYS, write_credentials

# The SDKs go through `requests`: never through a proxy from the environment.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "*"


@pytest.fixture(scope="session")
def credentials(tmp_path_factory):
    return write_credentials(tmp_path_factory.mktemp("creds") / "credentials.toml")


@pytest.fixture(scope="session", params=["embedded", "etcd"])
def control(request, tmp_path_factory, credentials):
    """A running tlsfleet-control, once on the embedded store and once on etcd."""
    workdir = tmp_path_factory.mktemp(f"control-{request.param}")
    etcd = None
    if request.param == "etcd":
        etcd = procs.Etcd(workdir).start()
        store = f"etcd://{etcd.endpoint}"
    else:
        store = f"file:{workdir / 'data'}"
    # The OSS-compatibility suite changes policies both ways, as OSS lets it: this server
    # applies REST downgrades. test_downgrades.py covers the default (refuse).
    server = procs.Control(workdir, store, credentials, domains=(DOMAIN,),
                           extra=("--rest-downgrades", "allow"))
    try:
        server.start()
        yield server
        server.stop(check=True)
    finally:
        server.stop(check=False)
        if etcd is not None:
            etcd.kill()


@pytest.fixture
def raw(control) -> ossraw.Raw:
    """Hand-signed requests with the admin key."""
    return ossraw.Raw(control.http_port, "AKADMIN", KEYS["AKADMIN"][0])


@pytest.fixture
def bucket() -> str:
    """A bucket name no other test uses."""
    return f"b-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def logs_bucket() -> str:
    return f"logs-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def resolve_oss_test(monkeypatch):
    """Resolves `<bucket>.oss.test` and `oss.test` to 127.0.0.1 inside this process, so that
    the SDKs can send virtual-hosted requests to the local server."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and (host == DOMAIN or host.endswith("." + DOMAIN)):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

