"""The official `alibabacloud-oss-v2` SDK (signature V4 by default, and V1) against a real
server, including CipherSuite, which oss2 does not model."""

import alibabacloud_oss_v2 as oss
import pytest
from alibabacloud_oss_v2.types import CaseInsensitiveDict, OperationInput, Signer

import ossraw
from sdkenv import DOMAIN, REGION, secret


class SkewedSigner(Signer):
    """The SDK's own signer with its clock `offset` seconds off."""

    def __init__(self, inner, offset):
        self.inner, self.offset = inner, offset

    def sign(self, signing_ctx):
        signing_ctx.clock_offset = self.offset
        return self.inner.sign(signing_ctx)


def make_client(endpoint, version="v4", key="AKADMIN", key_secret=None, **kwargs):
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(
        key, key_secret or secret(key))
    cfg.region = REGION
    cfg.endpoint = endpoint
    # One attempt: a retried failure would hide what the server answered first.
    cfg.retry_max_attempts = 1
    if version == "v1":
        cfg.signature_version = "v1"
    return oss.Client(cfg, **kwargs)


def https(tls, cipher_suite=None, enable=True):
    return oss.HttpsConfiguration(tls=oss.TLS(enable=enable, tls_versions=tls),
                                  cipher_suite=cipher_suite)


def put(client, bucket, configuration):
    return client.put_bucket_https_config(
        oss.PutBucketHttpsConfigRequest(bucket=bucket, https_configuration=configuration))


def get(client, bucket):
    return client.get_bucket_https_config(
        oss.GetBucketHttpsConfigRequest(bucket=bucket)).https_configuration


def expect_error(call, status, code):
    """Runs `call`, which must fail with the server's `code` as a ServiceError."""
    with pytest.raises(oss.exceptions.OperationError) as info:
        call()
    e = info.value.unwrap()
    assert isinstance(e, oss.exceptions.ServiceError), repr(e)
    assert (e.status_code, e.code) == (status, code), str(e)
    assert len(e.request_id) == 24, e.request_id
    assert e.message, str(e)
    return e


VERSIONS = pytest.mark.parametrize("version", ["v4", "v1"])


@VERSIONS
def test_put_then_get(control, bucket, version):
    c = make_client(control.endpoint, version)
    result = put(c, bucket, https(["TLSv1.2", "TLSv1.3"]))
    assert result.status_code == 200
    assert len(result.request_id) == 24
    got = get(c, bucket)
    assert (got.tls.enable, got.tls.tls_versions) == (True, ["TLSv1.2", "TLSv1.3"])


@VERSIONS
def test_cipher_suites_round_trip_exactly(control, bucket, version):
    c = make_client(control.endpoint, version)
    tls12 = ["ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
             "AES256-SHA"]  # the last one is stored but not served (no ECDHE)
    tls13 = ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
    suites = oss.CipherSuite(enable=True, strong_cipher_suite=False,
                             custom_cipher_suites=tls12, tls13_custom_cipher_suites=tls13)
    put(c, bucket, https(["TLSv1.2", "TLSv1.3"], suites))
    got = get(c, bucket)
    assert got.tls.tls_versions == ["TLSv1.2", "TLSv1.3"]
    cs = got.cipher_suite
    assert (cs.enable, cs.strong_cipher_suite) == (True, False)
    assert cs.custom_cipher_suites == tls12
    assert cs.tls13_custom_cipher_suites == tls13


@VERSIONS
def test_strong_cipher_suites_round_trip(control, bucket, version):
    c = make_client(control.endpoint, version)
    put(c, bucket, https(["TLSv1.3"], oss.CipherSuite(enable=True, strong_cipher_suite=True)))
    cs = get(c, bucket).cipher_suite
    assert (cs.enable, cs.strong_cipher_suite) == (True, True)


@VERSIONS
def test_virtual_hosted(control, bucket, version, resolve_oss_test, raw):
    c = make_client(f"http://{DOMAIN}:{control.http_port}", version)
    put(c, bucket, https(["TLSv1.3"]))
    assert get(c, bucket).tls.tls_versions == ["TLSv1.3"]
    assert ossraw.parse_config(raw.get(bucket).body)["versions"] == ["TLSv1.3"]


@VERSIONS
def test_empty_put_is_malformed_xml(control, bucket, version, raw):
    c = make_client(control.endpoint, version)
    expect_error(lambda: put(c, bucket, None), 400, "MalformedXML")
    ossraw.assert_not_stored(raw, bucket)


@VERSIONS
@pytest.mark.parametrize("body", [
    b"<HttpsConfiguration><TLS><Enable>true</Enable>",
    b"not xml at all",
    b"<HttpsConfiguration><TLS><Enable>yes</Enable></TLS></HttpsConfiguration>",
])
def test_bad_xml_is_malformed_xml(control, bucket, version, raw, body):
    c = make_client(control.endpoint, version)
    op = OperationInput(
        op_name="PutBucketHttpsConfig", method="PUT",
        headers=CaseInsensitiveDict({"Content-Type": "application/xml"}),
        parameters={"httpsConfig": ""}, body=body, bucket=bucket,
        op_metadata={"sub-resource": ["httpsConfig"]},
    )
    expect_error(lambda: c.invoke_operation(op), 400, "MalformedXML")
    ossraw.assert_not_stored(raw, bucket)


@VERSIONS
@pytest.mark.parametrize("tls", [["TLSv1.4"], ["SSLv3"], []])
def test_unknown_or_missing_version_is_malformed_xml(control, bucket, version, raw, tls):
    c = make_client(control.endpoint, version)
    expect_error(lambda: put(c, bucket, https(tls)), 400, "MalformedXML")
    ossraw.assert_not_stored(raw, bucket)


@VERSIONS
@pytest.mark.parametrize("configuration", [
    https(["TLSv1.0"]),
    https(["TLSv1.0", "TLSv1.1"]),
    # Only suites rustls does not serve, for the only version enabled.
    https(["TLSv1.2"], oss.CipherSuite(enable=True, strong_cipher_suite=False,
                                       custom_cipher_suites=["AES128-SHA"])),
    # A name that is no cipher suite at all.
    https(["TLSv1.3"], oss.CipherSuite(enable=True, strong_cipher_suite=False,
                                       tls13_custom_cipher_suites=["TLS_NOT_A_SUITE"])),
], ids=["tls10", "tls10-11", "unserved-suites", "not-a-suite"])
def test_policy_serving_nothing_is_invalid_argument(control, bucket, version, raw,
                                                     configuration):
    c = make_client(control.endpoint, version)
    expect_error(lambda: put(c, bucket, configuration), 400, "InvalidArgument")
    ossraw.assert_not_stored(raw, bucket)


@VERSIONS
def test_wrong_secret(control, bucket, version, raw):
    c = make_client(control.endpoint, version, key_secret="not-the-secret")
    expect_error(lambda: put(c, bucket, https(["TLSv1.3"])), 403, "SignatureDoesNotMatch")
    expect_error(lambda: get(c, bucket), 403, "SignatureDoesNotMatch")
    ossraw.assert_not_stored(raw, bucket)


@VERSIONS
def test_unknown_key(control, bucket, version, raw):
    c = make_client(control.endpoint, version, key="AKNOBODY", key_secret="x")
    e = expect_error(lambda: put(c, bucket, https(["TLSv1.3"])), 403, "InvalidAccessKeyId")
    assert "AKNOBODY" in e.message
    ossraw.assert_not_stored(raw, bucket)


@VERSIONS
def test_read_only_key_cannot_put(control, bucket, version, raw):
    c = make_client(control.endpoint, version, key="AKREAD")
    e = expect_error(lambda: put(c, bucket, https(["TLSv1.3"])), 403, "AccessDenied")
    assert "AKREAD" in e.message and "oss:PutBucketHttpsConfig" in e.message, e.message
    ossraw.assert_not_stored(raw, bucket)
    assert get(c, bucket).tls.enable is False


@VERSIONS
def test_bucket_glob_limits_a_key(control, bucket, logs_bucket, version, raw):
    c = make_client(control.endpoint, version, key="AKLOGS")
    put(c, logs_bucket, https(["TLSv1.2"]))
    assert get(c, logs_bucket).tls.tls_versions == ["TLSv1.2"]
    expect_error(lambda: put(c, bucket, https(["TLSv1.3"])), 403, "AccessDenied")
    expect_error(lambda: get(c, bucket), 403, "AccessDenied")
    ossraw.assert_not_stored(raw, bucket)


@VERSIONS
@pytest.mark.parametrize("offset", [-3600, 3600])
def test_skewed_clock(control, bucket, version, raw, offset):
    inner = oss.signer.SignerV1() if version == "v1" else oss.signer.SignerV4()
    c = make_client(control.endpoint, version, signer=SkewedSigner(inner, offset))
    expect_error(lambda: put(c, bucket, https(["TLSv1.3"])), 403, "RequestTimeTooSkewed")
    ossraw.assert_not_stored(raw, bucket)
