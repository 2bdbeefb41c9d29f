"""REST downgrades with the server's default (`--rest-downgrades refuse`): both official SDKs
get `403 AccessDenied` naming the setting for a change that lets in what the bucket's policy
keeps out; tightening is applied; nothing refused is stored."""

import json
import time

import oss2
import pytest

import procs
from sdkenv import DOMAIN, REGION, next_second, secret
from test_oss_v2 import expect_error, https, make_client
from test_oss_v2 import get as v2_get
from test_oss_v2 import put as v2_put


@pytest.fixture(scope="module")
def strict(tmp_path_factory, credentials):
    """A control server on the defaults: REST downgrades refused."""
    workdir = tmp_path_factory.mktemp("control-strict")
    server = procs.Control(workdir, f"file:{workdir / 'data'}", credentials, domains=(DOMAIN,))
    try:
        server.start()
        yield server
        server.stop(check=True)
    finally:
        server.stop(check=False)


def oss2_bucket(endpoint, name, auth):
    if auth == "v1":
        return oss2.Bucket(oss2.Auth("AKADMIN", secret("AKADMIN")), endpoint, name)
    return oss2.Bucket(oss2.AuthV4("AKADMIN", secret("AKADMIN")), endpoint, name, region=REGION)


@pytest.mark.parametrize("auth", ["v1", "v4"])
def test_oss2_downgrade_is_access_denied(strict, bucket, auth):
    b = oss2_bucket(strict.endpoint, bucket, auth)
    b.put_bucket_https_config(oss2.models.BucketTlsVersion(True, ["TLSv1.3"]))
    next_second()
    with pytest.raises(oss2.exceptions.ServerError) as info:
        b.put_bucket_https_config(oss2.models.BucketTlsVersion(True, ["TLSv1.2", "TLSv1.3"]))
    e = info.value
    assert (e.status, e.code) == (403, "AccessDenied"), e.details
    assert "downgrade" in e.details["Message"] and "--rest-downgrades" in e.details["Message"]
    assert "TLSv1.2" in e.details["Message"]
    # Nothing changed; turning management off is refused the same way.
    assert b.get_bucket_https_config().tls_version == ["TLSv1.3"]
    next_second()
    with pytest.raises(oss2.exceptions.ServerError) as info:
        b.put_bucket_https_config(oss2.models.BucketTlsVersion(False, []))
    assert info.value.code == "AccessDenied"


@pytest.mark.parametrize("version", ["v1", "v4"])
def test_v2_downgrade_is_access_denied_and_tightening_applies(strict, bucket, version):
    c = make_client(strict.endpoint, version)
    v2_put(c, bucket, https(["TLSv1.2", "TLSv1.3"]))
    # Tightening is no downgrade.
    next_second()
    v2_put(c, bucket, https(["TLSv1.3"]))
    next_second()
    e = expect_error(lambda: v2_put(c, bucket, https(["TLSv1.2", "TLSv1.3"])), 403,
                     "AccessDenied")
    assert "--rest-downgrades" in e.message, e.message
    assert v2_get(c, bucket).tls.tls_versions == ["TLSv1.3"]


def audit_lines(server):
    """The JSON audit records the server logged (`tlsfleet::audit: {...}`)."""
    records = []
    for line in server.log.read_text(errors="replace").splitlines():
        _, sep, doc = line.partition("tlsfleet::audit: ")
        if sep:
            records.append(json.loads(doc))
    return records


def audit_lines_of(server, bucket, count, timeout=10.0):
    """The audit records of `bucket`, once `count` of them are written (the server's log
    writer runs beside its requests), or what there is at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        mine = [r for r in audit_lines(server) if r["bucket"] == bucket]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.02)


def test_every_change_and_refusal_is_a_json_log_line(strict, bucket):
    b = oss2_bucket(strict.endpoint, bucket, "v4")
    b.put_bucket_https_config(oss2.models.BucketTlsVersion(True, ["TLSv1.3"]))
    next_second()
    with pytest.raises(oss2.exceptions.ServerError) as info:
        b.put_bucket_https_config(oss2.models.BucketTlsVersion(True, ["TLSv1.2", "TLSv1.3"]))
    refused_id = info.value.request_id
    mine = audit_lines_of(strict, bucket, 2)
    assert [(r["outcome"], r["downgrade"]) for r in mine] == [("applied", False),
                                                            ("refused", True)], mine
    refusal = mine[1]
    assert refusal["request_id"] == refused_id
    assert refusal["key_id"] == "AKADMIN" and refusal["via"] == "rest"
    assert refusal["peer"].startswith("127.0.0.1:")
    assert refusal["before"]["tls"]["tls_versions"] == ["TLSv1.3"]
    assert refusal["after"]["tls"]["tls_versions"] == ["TLSv1.2", "TLSv1.3"]
    assert "--rest-downgrades" in refusal["reason"]
