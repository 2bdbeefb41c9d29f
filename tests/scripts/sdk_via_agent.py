#!/usr/bin/env python3
"""The official OSS SDKs with their endpoint set to an agent (https, the test CA), for
tests/tests/api_via_agent.rs: put and get a bucket's HttpsConfig as they would against OSS.
Names under oss.test resolve to 127.0.0.1 in this process.

usage: sdk_via_agent.py ENDPOINT AK SK BUCKET CA_FILE
Prints one line per step, `<sdk> <op>: <versions>`; exit 1 with the error.
"""
import os
import sys

CA = sys.argv[5] if len(sys.argv) > 5 else None
if CA:
    # Both SDKs send through requests, which takes its CA bundle from here.
    os.environ["REQUESTS_CA_BUNDLE"] = CA

try:
    import alibabacloud_oss_v2 as oss
    import oss2
except ImportError as e:
    sys.exit(f"{e}: python3 -m pip install -r tests/sdk/requirements.txt (tests/run.sh does this)")

from sdkscript import REGION, next_second, resolve_test_names_to_loopback

resolve_test_names_to_loopback()


def main():
    endpoint, ak, sk, bucket = sys.argv[1:5]
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(ak, sk)
    cfg.region = REGION
    cfg.endpoint = endpoint
    cfg.retry_max_attempts = 1
    client = oss.Client(cfg)
    conf = oss.HttpsConfiguration(tls=oss.TLS(enable=True, tls_versions=["TLSv1.2", "TLSv1.3"]))
    client.put_bucket_https_config(
        oss.PutBucketHttpsConfigRequest(bucket=bucket, https_configuration=conf))
    got = client.get_bucket_https_config(oss.GetBucketHttpsConfigRequest(bucket=bucket))
    print("v2 get:", ",".join(got.https_configuration.tls.tls_versions))

    next_second()
    b = oss2.Bucket(oss2.AuthV4(ak, sk), endpoint, bucket, region=REGION)
    b.put_bucket_https_config(oss2.models.BucketTlsVersion(True, ["TLSv1.3"]))
    print("oss2-v4 get:", ",".join(b.get_bucket_https_config().tls_version))
    v1 = oss2.Bucket(oss2.Auth(ak, sk), endpoint, bucket)
    print("oss2-v1 get:", ",".join(v1.get_bucket_https_config().tls_version))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the test reads the error
        sys.exit(f"{type(e).__name__}: {e}")
