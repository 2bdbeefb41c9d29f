#!/usr/bin/env python3
"""The official OSS SDKs on a nested domain (`<bucket>.internal.oss.test`, beside `oss.test`),
virtual-hosted, for tests/tests/nested_domains.rs. Every name under oss.test resolves to
127.0.0.1 in this process.

usage:
  sdk_nested.py put-v2  ENDPOINT AK SK BUCKET VERSIONS          (alibabacloud-oss-v2, V4)
  sdk_nested.py get-oss2 ENDPOINT AK SK BUCKET [CA_FILE [MAX_TLS]] (oss2, V4; MAX_TLS: 1.2)

Prints the bucket's TLS versions (comma-separated) or the request id; exit 1 with the error.
"""
import ssl
import sys

try:
    import alibabacloud_oss_v2 as oss
    import oss2
    import requests.adapters
except ImportError as e:
    sys.exit(f"{e}: python3 -m pip install -r tests/sdk/requirements.txt (tests/run.sh does this)")

from sdkscript import REGION, resolve_test_names_to_loopback

resolve_test_names_to_loopback()


class TlsAdapter(requests.adapters.HTTPAdapter):
    """Trusts only `ca` and offers at most `max_tls`."""

    def __init__(self, ca, max_tls=None, **kwargs):
        self.ctx = ssl.create_default_context(cafile=ca)
        if max_tls == "1.2":
            self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["ssl_context"] = self.ctx
        return super().init_poolmanager(*args, **kwargs)


def put_v2(endpoint, ak, sk, bucket, versions):
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(ak, sk)
    cfg.region = REGION
    cfg.endpoint = endpoint
    client = oss.Client(cfg)
    conf = oss.HttpsConfiguration(tls=oss.TLS(enable=True, tls_versions=versions.split(",")))
    r = client.put_bucket_https_config(
        oss.PutBucketHttpsConfigRequest(bucket=bucket, https_configuration=conf))
    print(r.request_id)


def get_oss2(endpoint, ak, sk, bucket, ca=None, max_tls=None):
    session = oss2.Session()
    if ca:
        session.session.mount("https://", TlsAdapter(ca, max_tls))
        session.session.verify = ca
    b = oss2.Bucket(oss2.AuthV4(ak, sk), endpoint, bucket, region=REGION, session=session)
    print(",".join(b.get_bucket_https_config().tls_version or []))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        {"put-v2": put_v2, "get-oss2": get_oss2}[cmd](*args)
    except Exception as e:  # the test reads the error
        sys.exit(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
