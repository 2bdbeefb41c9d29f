"""Bad input, by hand-made requests: each gets a clear OSS error, the server stays up, and a
follow-up GET shows that nothing was stored."""

import base64
import hashlib
import time
from email.utils import formatdate

import pytest

import ossraw
from ossraw import assert_not_stored, config_xml
from sdkenv import DOMAIN

GOOD = config_xml(["TLSv1.2", "TLSv1.3"])


def check_error(reply, status, code, bucket=None, mentions=None):
    """An OSS error document: status, code, a message, the request id of the header."""
    assert reply.status == status, (reply.status, reply.body[:300])
    err = reply.error
    assert err["Code"] == code, err
    assert err["Message"], err
    assert len(reply.request_id) == 24 and err["RequestId"] == reply.request_id, err
    assert err["HostId"], err
    assert reply.headers.get("content-type") == "application/xml"
    if bucket is not None:
        assert err.get("BucketName") == bucket, err
    if mentions is not None:
        assert mentions in err["Message"], err
    return err


def test_good_put_answers_empty_200_with_revision(raw, bucket):
    r = raw.put(bucket, GOOD, headers={"Content-Type": "application/xml"})
    assert (r.status, r.body) == (200, b"")
    assert len(r.request_id) == 24
    assert int(r.headers["x-tlsfleet-revision"]) > 0
    g = raw.get(bucket)
    assert g.headers["content-type"] == "application/xml"
    assert ossraw.parse_config(g.body) == {"enable": True, "versions": ["TLSv1.2", "TLSv1.3"]}
    assert int(g.headers["x-tlsfleet-revision"]) >= int(r.headers["x-tlsfleet-revision"])


def test_request_ids_are_unique(raw, bucket):
    ids = {raw.get(bucket).request_id for _ in range(20)}
    assert len(ids) == 20 and all(len(i) == 24 and i == i.upper() for i in ids)


@pytest.mark.parametrize("body", [
    GOOD[:-10],                                                   # truncated
    b"<HttpsConfiguration><TLS><Enable>true</Enable><TLSVersion>TLSv1.2",
    # 10k levels deep (unclosed, to stay under the 64 KiB limit), and 9k levels closed.
    b"<HttpsConfiguration><TLS>" + b"<a>" * 10_000,
    b"<HttpsConfiguration>" + b"<a>" * 9_000 + b"</a>" * 9_000 + b"</HttpsConfiguration>",
    b"\x00\xff\xfe binary",
    b"<HttpsConfiguration xmlns='x'><TLS><Enable>maybe</Enable></TLS></HttpsConfiguration>",
    (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
     b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
     b"<HttpsConfiguration><TLS><Enable>&c;</Enable></TLS></HttpsConfiguration>"),
], ids=["truncated-tail", "truncated-open", "nested-10k-open", "nested-9k-closed", "binary",
        "bad-boolean", "entity-expansion"])
def test_malformed_bodies(control, raw, bucket, body):
    check_error(raw.put(bucket, body), 400, "MalformedXML", bucket=bucket)
    assert control.alive()
    assert_not_stored(raw, bucket)


@pytest.mark.parametrize("body", [b"", b"  \n"], ids=["empty", "blank"])
def test_empty_body_is_malformed_xml(raw, bucket, body):
    check_error(raw.put(bucket, body), 400, "MalformedXML", bucket=bucket)
    assert_not_stored(raw, bucket)


def test_ten_mebibyte_body(control, raw, bucket):
    big = GOOD + b" " * (10 * 1024 * 1024)
    check_error(raw.put(bucket, big), 400, "EntityTooLarge", bucket=bucket)
    assert control.alive()
    assert_not_stored(raw, bucket)


def test_ten_mebibyte_chunked_body(control, raw, bucket):
    def chunks():
        yield GOOD
        for _ in range(160):
            yield b" " * (64 * 1024)

    check_error(raw.put(bucket, chunks(), encode_chunked=True), 400, "EntityTooLarge",
                bucket=bucket)
    assert control.alive()
    assert_not_stored(raw, bucket)


def test_body_at_the_limit_is_read(raw, bucket):
    # 64 KiB exactly: accepted as a body (it is valid XML with trailing blanks).
    body = GOOD + b" " * (64 * 1024 - len(GOOD))
    r = raw.put(bucket, body)
    assert r.status == 200, r.body


@pytest.mark.parametrize("md5", [
    base64.b64encode(hashlib.md5(b"something else").digest()).decode(),
    "not base64!",
    base64.b64encode(b"short").decode(),
], ids=["other-digest", "not-base64", "wrong-length"])
def test_wrong_content_md5(raw, bucket, md5):
    check_error(raw.put(bucket, GOOD, headers={"Content-MD5": md5}), 400, "InvalidDigest",
                bucket=bucket)
    assert_not_stored(raw, bucket)


def test_right_content_md5(raw, bucket):
    md5 = base64.b64encode(hashlib.md5(GOOD).digest()).decode()
    assert raw.put(bucket, GOOD, headers={"Content-MD5": md5}).status == 200


@pytest.mark.parametrize("name", [
    "ab", "-abc", "abc-", "ABC", "a_b", "a.b", "a" * 64, "b%C3%BCck", "%2e%2e",
])
def test_invalid_bucket_names(raw, name):
    for method in ("PUT", "GET"):
        r = raw.request(method, f"/{name}/?httpsConfig", GOOD if method == "PUT" else b"")
        check_error(r, 400, "InvalidBucketName")


def test_no_bucket(raw):
    check_error(raw.request("GET", "/?httpsConfig", bucket=""), 400, "InvalidArgument")


@pytest.mark.parametrize("query", ["acl", "httpsConfig&acl", "website", "", "httpsConfig&x=1",
                                   "OSSAccessKeyId=AK&Signature=x&httpsConfig"])
def test_unknown_sub_resources(raw, bucket, query):
    path = f"/{bucket}/" + (f"?{query}" if query else "")
    err = check_error(raw.request("PUT", path, GOOD, bucket=bucket), 400, "InvalidArgument",
                      bucket=bucket)
    extra = [p.split("=")[0] for p in query.split("&") if p and p.split("=")[0] != "httpsConfig"]
    for param in extra:
        assert param in err["Message"], err
    assert_not_stored(raw, bucket)


def test_object_keys_are_refused(raw, bucket):
    check_error(raw.request("PUT", f"/{bucket}/object?httpsConfig", GOOD, bucket=bucket), 400,
                "InvalidArgument", bucket=bucket)
    assert_not_stored(raw, bucket)


@pytest.mark.parametrize("method", ["DELETE", "POST", "PATCH", "OPTIONS"])
def test_other_methods(raw, bucket, method):
    raw.put(bucket, GOOD)
    r = raw.request(method, f"/{bucket}/?httpsConfig", GOOD if method != "DELETE" else b"")
    check_error(r, 405, "MethodNotAllowed", bucket=bucket, mentions=method)
    assert r.headers.get("allow") == "GET, PUT"
    # Still the config stored before.
    assert ossraw.parse_config(raw.get(bucket).body)["versions"] == ["TLSv1.2", "TLSv1.3"]


def test_head_is_not_allowed(raw, bucket):
    r = raw.request("HEAD", f"/{bucket}/?httpsConfig")
    assert r.status == 405 and len(r.request_id) == 24


@pytest.mark.parametrize("host", ["{b}.oss.test", "{B}.OSS.TEST:{port}", "{b}.oss.test."])
def test_virtual_hosted_via_host_header(control, raw, bucket, host):
    host = host.format(b=bucket, B=bucket.upper(), port=control.http_port)
    r = raw.request("PUT", "/?httpsConfig=", config_xml(["TLSv1.3"]), bucket=bucket,
                    headers={"Host": host})
    assert r.status == 200, r.body
    g = raw.request("GET", "/?httpsConfig", bucket=bucket, headers={"Host": host})
    assert ossraw.parse_config(g.body)["versions"] == ["TLSv1.3"]
    assert ossraw.parse_config(raw.get(bucket).body)["versions"] == ["TLSv1.3"]


def test_virtual_hosted_bad_bucket(raw):
    r = raw.request("PUT", "/?httpsConfig", GOOD, bucket="Bad_Name",
                    headers={"Host": f"Bad_Name.{DOMAIN}"})
    check_error(r, 400, "InvalidBucketName")


def test_virtual_hosted_signature_covers_the_bucket(raw, bucket):
    # Signed for another bucket than the Host names: refused.
    r = raw.request("PUT", "/?httpsConfig", GOOD, bucket="other-bucket",
                    headers={"Host": f"{bucket}.{DOMAIN}"})
    check_error(r, 403, "SignatureDoesNotMatch", bucket=bucket)
    assert_not_stored(raw, bucket)


def test_unsigned_request(raw, bucket):
    check_error(raw.put(bucket, GOOD, sign=False), 403, "AccessDenied", bucket=bucket)
    check_error(raw.get(bucket, sign=False), 403, "AccessDenied", bucket=bucket)
    assert_not_stored(raw, bucket)


@pytest.mark.parametrize("authorization", [
    "OSS AKADMIN", "OSS4-HMAC-SHA256 Credential=AKADMIN", "Bearer abc", "OSS :",
])
def test_malformed_authorization(raw, bucket, authorization):
    r = raw.put(bucket, GOOD, sign=False, headers={"Authorization": authorization})
    check_error(r, 403, "AccessDenied", bucket=bucket)
    assert_not_stored(raw, bucket)


def test_old_date_is_too_skewed(raw, bucket):
    old = formatdate(time.time() - 16 * 60, usegmt=True)
    check_error(raw.put(bucket, GOOD, date=old), 403, "RequestTimeTooSkewed", bucket=bucket)
    assert_not_stored(raw, bucket)


def test_wrong_secret_and_unknown_key(raw, bucket):
    check_error(raw.put(bucket, GOOD, secret="wrong"), 403, "SignatureDoesNotMatch")
    check_error(raw.put(bucket, GOOD, access_key_id="AKNOBODY"), 403, "InvalidAccessKeyId",
                mentions="AKNOBODY")
    assert_not_stored(raw, bucket)


def test_unauthenticated_huge_body_is_answered(control, raw, bucket):
    # Refused on its headers, before the body is read: the answer still reaches the client.
    r = raw.put(bucket, b" " * (10 * 1024 * 1024), secret="wrong")
    check_error(r, 403, "SignatureDoesNotMatch")
    assert control.alive()


def test_probes(control):
    plain = ossraw.Raw(control.http_port, "", "")
    assert plain.request("GET", "/-/healthz", sign=False).status == 200
    r = plain.request("GET", "/-/readyz", sign=False)
    assert r.status == 200 and len(r.request_id) == 24
