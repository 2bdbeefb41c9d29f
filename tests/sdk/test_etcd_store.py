"""The REST API over etcd when etcd goes away and comes back, and two servers on one etcd.
Each test has its own etcd and servers: they stop etcd."""

import time

import pytest

import ossraw
import procs
from ossraw import config_xml
from sdkenv import DOMAIN, secret


@pytest.fixture
def etcd(tmp_path):
    e = procs.Etcd(tmp_path).start()
    yield e
    e.kill()


@pytest.fixture
def servers(tmp_path, etcd, credentials):
    started = []

    def start(name):
        workdir = tmp_path / name
        workdir.mkdir()
        server = procs.Control(workdir, f"etcd://{etcd.endpoint}", credentials, (DOMAIN,),
                               extra=("--rest-downgrades", "allow"))
        started.append(server.start())
        return server

    yield start
    for s in started:
        s.stop(check=False)


def admin(server):
    return ossraw.Raw(server.http_port, "AKADMIN", secret("AKADMIN"))


def eventually(probe, timeout=30.0):
    """Polls `probe` until it returns a truthy value; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_etcd_down_answers_503_and_writes_nothing(servers, etcd, bucket):
    raw = admin(servers("a"))
    assert raw.put(bucket, config_xml(["TLSv1.2"])).status == 200

    etcd.kill()
    started = time.monotonic()
    r = raw.put(bucket, config_xml(["TLSv1.3"]))
    elapsed = time.monotonic() - started
    assert r.status == 503, r.body
    assert r.error["Code"] == "ServiceUnavailable" and len(r.request_id) == 24
    assert elapsed < 15, f"503 took {elapsed:.1f}s"

    etcd.restart()
    probe = f"{bucket}-probe"
    back = eventually(lambda: raw.put(probe, config_xml(["TLSv1.3"])).status == 200)
    assert back, "PUT never worked again after etcd came back"
    # The refused write is nowhere; the one before it is still there.
    assert ossraw.parse_config(raw.get(bucket).body)["versions"] == ["TLSv1.2"]
    assert raw.put(bucket, config_xml(["TLSv1.2", "TLSv1.3"])).status == 200
    assert ossraw.parse_config(raw.get(bucket).body)["versions"] == ["TLSv1.2", "TLSv1.3"]


def test_put_on_one_server_is_visible_on_the_other(servers, bucket):
    a, b = admin(servers("a")), admin(servers("b"))
    r = a.put(bucket, config_xml(["TLSv1.3"]))
    assert r.status == 200, r.body
    seen = eventually(lambda: ossraw.parse_config(b.get(bucket).body)["versions"] == ["TLSv1.3"],
                      timeout=10)
    assert seen, b.get(bucket).body
