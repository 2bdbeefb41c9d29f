"""The official `oss2` SDK (signature V1 `Auth` and V4 `AuthV4`) against a real server."""

import datetime as real_datetime
import time
from email.utils import formatdate

import oss2
import oss2.auth
import oss2.utils
import pytest

import ossraw
from sdkenv import DOMAIN, REGION, next_second, secret


def make_bucket(endpoint, name, auth="v1", key="AKADMIN", key_secret=None):
    key_secret = key_secret or secret(key)
    if auth == "v1":
        return oss2.Bucket(oss2.Auth(key, key_secret), endpoint, name)
    return oss2.Bucket(oss2.AuthV4(key, key_secret), endpoint, name, region=REGION)


def versions(*v):
    return oss2.models.BucketTlsVersion(True, list(v))


def expect_error(call, status, code, cls=oss2.exceptions.ServerError):
    """Runs `call`, which must fail with the server's `code`, as the SDK class `cls`."""
    with pytest.raises(cls) as info:
        call()
    e = info.value
    assert (e.status, e.code) == (status, code), e.details
    assert len(e.request_id) == 24, e.request_id
    assert e.details.get("Message"), e.details
    return e


AUTHS = pytest.mark.parametrize("auth", ["v1", "v4"])


@AUTHS
def test_put_then_get(control, bucket, auth):
    b = make_bucket(control.endpoint, bucket, auth)
    result = b.put_bucket_https_config(versions("TLSv1.2", "TLSv1.3"))
    assert result.status == 200
    assert len(result.request_id) == 24
    assert int(result.headers["x-tlsfleet-revision"]) > 0
    got = b.get_bucket_https_config()
    assert (got.tls_enabled, got.tls_version) == (True, ["TLSv1.2", "TLSv1.3"])


@AUTHS
def test_duplicates_are_stored_once_in_order(control, bucket, auth):
    b = make_bucket(control.endpoint, bucket, auth)
    b.put_bucket_https_config(versions("TLSv1.3", "TLSv1.2", "TLSv1.3"))
    assert b.get_bucket_https_config().tls_version == ["TLSv1.3", "TLSv1.2"]


@AUTHS
def test_disable_then_get(control, bucket, auth):
    b = make_bucket(control.endpoint, bucket, auth)
    b.put_bucket_https_config(versions("TLSv1.3"))
    # oss2 signs no body digest: a second PUT of this bucket needs another second.
    next_second()
    b.put_bucket_https_config(oss2.models.BucketTlsVersion(False, []))
    got = b.get_bucket_https_config()
    assert (got.tls_enabled, got.tls_version) == (False, [])


@AUTHS
def test_never_set_bucket_reads_as_disabled(control, bucket, auth):
    got = make_bucket(control.endpoint, bucket, auth).get_bucket_https_config()
    assert (got.tls_enabled, got.tls_version) == (False, [])


@AUTHS
def test_virtual_hosted(control, bucket, auth, resolve_oss_test, raw):
    b = make_bucket(f"http://{DOMAIN}:{control.http_port}", bucket, auth)
    b.put_bucket_https_config(versions("TLSv1.2"))
    assert b.get_bucket_https_config().tls_version == ["TLSv1.2"]
    # The same bucket, path style.
    assert ossraw.parse_config(raw.get(bucket).body)["versions"] == ["TLSv1.2"]


@AUTHS
def test_bad_xml_is_malformed_xml(control, bucket, auth, raw):
    b = make_bucket(control.endpoint, bucket, auth)
    do_bucket = b._Bucket__do_bucket  # the SDK's own signed request, with our body
    body = b"<HttpsConfiguration><TLS><Enable>true</Enable><TLSVersion>TLSv1.2"
    expect_error(
        lambda: do_bucket("PUT", data=body, params={"httpsConfig": ""}),
        400, "MalformedXML", oss2.exceptions.MalformedXml,
    )
    ossraw.assert_not_stored(raw, bucket)


@AUTHS
@pytest.mark.parametrize("tls", [["TLSv1.4"], ["tlsv1.2"], ["SSLv3", "TLSv1.2"], []])
def test_unknown_or_missing_version_is_malformed_xml(control, bucket, auth, raw, tls):
    b = make_bucket(control.endpoint, bucket, auth)
    expect_error(
        lambda: b.put_bucket_https_config(oss2.models.BucketTlsVersion(True, tls)),
        400, "MalformedXML", oss2.exceptions.MalformedXml,
    )
    ossraw.assert_not_stored(raw, bucket)


@AUTHS
@pytest.mark.parametrize("tls", [["TLSv1.0"], ["TLSv1.0", "TLSv1.1"]])
def test_policy_serving_nothing_is_invalid_argument(control, bucket, auth, raw, tls):
    b = make_bucket(control.endpoint, bucket, auth)
    e = expect_error(
        lambda: b.put_bucket_https_config(versions(*tls)),
        400, "InvalidArgument", oss2.exceptions.InvalidArgument,
    )
    assert "TLS" in e.details["Message"], e.details
    ossraw.assert_not_stored(raw, bucket)


@AUTHS
def test_wrong_secret(control, bucket, auth, raw):
    b = make_bucket(control.endpoint, bucket, auth, key_secret="not-the-secret")
    expect_error(
        lambda: b.put_bucket_https_config(versions("TLSv1.3")),
        403, "SignatureDoesNotMatch", oss2.exceptions.SignatureDoesNotMatch,
    )
    expect_error(b.get_bucket_https_config, 403, "SignatureDoesNotMatch")
    ossraw.assert_not_stored(raw, bucket)


@AUTHS
def test_unknown_key(control, bucket, auth, raw):
    b = make_bucket(control.endpoint, bucket, auth, key="AKNOBODY", key_secret="x")
    e = expect_error(lambda: b.put_bucket_https_config(versions("TLSv1.3")), 403,
                     "InvalidAccessKeyId")
    assert "AKNOBODY" in e.details["Message"]
    ossraw.assert_not_stored(raw, bucket)


@AUTHS
def test_read_only_key_cannot_put(control, bucket, auth, raw):
    b = make_bucket(control.endpoint, bucket, auth, key="AKREAD")
    e = expect_error(lambda: b.put_bucket_https_config(versions("TLSv1.3")), 403,
                     "AccessDenied", oss2.exceptions.AccessDenied)
    assert "oss:PutBucketHttpsConfig" in e.details["Message"], e.details
    ossraw.assert_not_stored(raw, bucket)
    assert b.get_bucket_https_config().tls_enabled is False  # reading is granted


@AUTHS
def test_bucket_glob_limits_a_key(control, bucket, logs_bucket, auth, raw):
    logs = make_bucket(control.endpoint, logs_bucket, auth, key="AKLOGS")
    logs.put_bucket_https_config(versions("TLSv1.3"))
    assert logs.get_bucket_https_config().tls_version == ["TLSv1.3"]
    other = make_bucket(control.endpoint, bucket, auth, key="AKLOGS")
    e = expect_error(lambda: other.put_bucket_https_config(versions("TLSv1.3")), 403,
                     "AccessDenied", oss2.exceptions.AccessDenied)
    assert bucket in e.details["Message"], e.details
    expect_error(other.get_bucket_https_config, 403, "AccessDenied", oss2.exceptions.AccessDenied)
    ossraw.assert_not_stored(raw, bucket)


@pytest.mark.parametrize("offset", [-3600, 3600])
def test_skewed_clock_v1(control, bucket, raw, monkeypatch, offset):
    monkeypatch.setattr(oss2.utils, "http_date",
                        lambda timeval=None: formatdate(time.time() + offset, usegmt=True))
    b = make_bucket(control.endpoint, bucket, "v1")
    expect_error(lambda: b.put_bucket_https_config(versions("TLSv1.3")), 403,
                 "RequestTimeTooSkewed")
    monkeypatch.undo()
    ossraw.assert_not_stored(raw, bucket)


@pytest.mark.parametrize("offset", [-3600, 3600])
def test_skewed_clock_v4(control, bucket, raw, monkeypatch, offset):
    class SkewedDatetime(real_datetime.datetime):
        @classmethod
        def utcnow(cls):
            return real_datetime.datetime.now(real_datetime.timezone.utc).replace(
                tzinfo=None) + real_datetime.timedelta(seconds=offset)

    monkeypatch.setattr(oss2.auth, "datetime", SkewedDatetime)
    b = make_bucket(control.endpoint, bucket, "v4")
    expect_error(lambda: b.put_bucket_https_config(versions("TLSv1.3")), 403,
                 "RequestTimeTooSkewed")
    monkeypatch.undo()
    ossraw.assert_not_stored(raw, bucket)


def test_small_skew_is_accepted(control, bucket, monkeypatch):
    monkeypatch.setattr(oss2.utils, "http_date",
                        lambda timeval=None: formatdate(time.time() - 600, usegmt=True))
    b = make_bucket(control.endpoint, bucket, "v1")
    b.put_bucket_https_config(versions("TLSv1.3"))
    assert b.get_bucket_https_config().tls_version == ["TLSv1.3"]
