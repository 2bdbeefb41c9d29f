"""Integrity of REST writes: a signed PUT is accepted once (a replay, with its body or a
swapped one, is refused), and with --require-signed-body the signature must cover the body.
Real server, hand-signed requests (V1 and V4 as the SDKs send them) and the official SDKs."""

import base64
import hashlib
import time
from email.utils import formatdate

import alibabacloud_oss_v2 as oss
import oss2
import pytest

import ossraw
import procs
from sdkenv import DOMAIN, REGION, secret, write_credentials

STRICT = ossraw.config_xml(["TLSv1.3"])
SWAPPED = ossraw.config_xml([], enable=False)


def v1_headers():
    return {"Date": formatdate(time.time(), usegmt=True)}


def v4_request(raw, bucket, body, headers):
    """A V4 PUT with the exact headers given (UNSIGNED-PAYLOAD unless they say otherwise)."""
    h = dict(headers)
    auth = ossraw.sign_v4(secret("AKADMIN"), "PUT", bucket, h, region=REGION)
    h["Authorization"] = auth.replace("{ak}", "AKADMIN")
    return raw.request("PUT", f"/{bucket}/?httpsConfig", body, bucket=bucket, headers=h,
                       sign=False)


def v4_headers():
    return {
        "x-oss-date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "x-oss-content-sha256": "UNSIGNED-PAYLOAD",
        "Date": formatdate(time.time(), usegmt=True),
    }


def versions_of(raw, bucket):
    return ossraw.parse_config(raw.get(bucket).body)["versions"]


def test_a_replayed_v1_put_is_refused_with_its_body_or_another(raw, bucket):
    headers = v1_headers()
    # What oss2 sends: no Content-MD5, so the body is not signed.
    assert raw.put(bucket, STRICT, headers=dict(headers), content_md5=False).status == 200
    for body in (STRICT, SWAPPED):
        r = raw.put(bucket, body, headers=dict(headers), content_md5=False)
        assert r.status == 403, r.body
        assert r.error["Code"] == "AccessDenied"
        assert "signature" in r.error["Message"] and "used" in r.error["Message"]
    assert versions_of(raw, bucket) == ["TLSv1.3"], "a replay changed the policy"


def test_a_replayed_v4_unsigned_payload_put_is_refused(raw, bucket):
    headers = v4_headers()
    assert v4_request(raw, bucket, STRICT, headers).status == 200
    r = v4_request(raw, bucket, SWAPPED, headers)
    assert r.status == 403, r.body
    assert r.error["Code"] == "AccessDenied"
    assert versions_of(raw, bucket) == ["TLSv1.3"]


def test_repeated_gets_are_not_replays(raw, bucket):
    headers = v1_headers()
    for _ in range(3):
        assert raw.get(bucket, headers=dict(headers)).status == 200


@pytest.fixture(scope="module")
def strict_control(tmp_path_factory):
    """A server that accepts only PUTs whose signature covers the body."""
    workdir = tmp_path_factory.mktemp("control-strict")
    creds = write_credentials(workdir / "credentials.toml")
    server = procs.Control(workdir, f"file:{workdir / 'data'}", creds, domains=(DOMAIN,),
                           extra=("--require-signed-body", "--rest-downgrades", "allow"))
    try:
        server.start()
        yield server
        server.stop(check=True)
    finally:
        server.stop(check=False)


@pytest.fixture
def strict(strict_control):
    return ossraw.Raw(strict_control.http_port, "AKADMIN", secret("AKADMIN"))


def md5(body):
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def test_require_signed_body_refuses_unsigned_bodies(strict, bucket):
    r = strict.put(bucket, STRICT, content_md5=False)
    assert r.status == 400, r.body
    assert r.error["Code"] == "MissingContentMD5"
    r = v4_request(strict, bucket, STRICT, v4_headers())
    assert (r.status, r.error["Code"]) == (400, "MissingContentMD5"), r.body
    assert versions_of(strict, bucket) == []


def test_require_signed_body_catches_a_swapped_body(strict, bucket):
    headers = {**v1_headers(), "Content-MD5": md5(STRICT)}
    # The signature covers Content-MD5; the swapped body does not match it.
    r = strict.put(bucket, SWAPPED, headers=dict(headers))
    assert (r.status, r.error["Code"]) == (400, "InvalidDigest"), r.body
    # Nor does recomputing the digest help: the signature covers the one signed.
    forged = {**headers, "Content-MD5": md5(SWAPPED)}
    signature_of_original = ossraw.sign_v1(secret("AKADMIN"), "PUT", f"/{bucket}/?httpsConfig",
                                           headers)
    forged["Authorization"] = f"OSS AKADMIN:{signature_of_original}"
    r = strict.request("PUT", f"/{bucket}/?httpsConfig", SWAPPED, bucket=bucket,
                       headers=forged, sign=False)
    assert (r.status, r.error["Code"]) == (403, "SignatureDoesNotMatch"), r.body
    assert versions_of(strict, bucket) == []
    # The honest request goes through; V4 with a signed payload hash too.
    assert strict.put(bucket, STRICT, headers=dict(headers)).status == 200
    v4 = {**v4_headers(), "x-oss-content-sha256": hashlib.sha256(SWAPPED).hexdigest()}
    assert v4_request(strict, bucket, SWAPPED, v4).status == 200


def test_the_v2_sdk_works_with_require_signed_body_and_oss2_does_not(strict_control, bucket):
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(
        "AKADMIN", secret("AKADMIN"))
    cfg.region = REGION
    cfg.endpoint = strict_control.endpoint
    cfg.retry_max_attempts = 1
    client = oss.Client(cfg)
    client.put_bucket_https_config(oss.PutBucketHttpsConfigRequest(
        bucket=bucket,
        https_configuration=oss.HttpsConfiguration(tls=oss.TLS(enable=True,
                                                               tls_versions=["TLSv1.3"]))))
    b = oss2.Bucket(oss2.Auth("AKADMIN", secret("AKADMIN")), strict_control.endpoint, bucket)
    with pytest.raises(oss2.exceptions.ServerError) as e:
        b.put_bucket_https_config(oss2.models.BucketTlsVersion(True, ["TLSv1.2"]))
    assert e.value.status == 400 and e.value.code == "MissingContentMD5"
    assert b.get_bucket_https_config().tls_version == ["TLSv1.3"]
