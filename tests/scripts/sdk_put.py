#!/usr/bin/env python3
"""PUT a bucket's HttpsConfig through the official alibabacloud-oss-v2 SDK (V4 signature).

usage: sdk_put.py ENDPOINT AK SK BUCKET VERSIONS [TLS12_SUITES] [TLS13_SUITES]
VERSIONS and the suite lists are comma-separated. Prints the request id; exit 1 on error.
"""
import sys

try:
    import alibabacloud_oss_v2 as oss
except ImportError:
    sys.exit("alibabacloud-oss-v2 is missing: python3 -m pip install alibabacloud-oss-v2 (tests/run.sh does this)")


def main():
    endpoint, ak, sk, bucket, versions = sys.argv[1:6]
    tls12 = [s for s in (sys.argv[6] if len(sys.argv) > 6 else "").split(",") if s]
    tls13 = [s for s in (sys.argv[7] if len(sys.argv) > 7 else "").split(",") if s]
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(ak, sk)
    cfg.region = "cn-hangzhou"
    cfg.endpoint = endpoint
    client = oss.Client(cfg)
    cipher = None
    if tls12 or tls13:
        cipher = oss.CipherSuite(enable=True, strong_cipher_suite=False,
                                 custom_cipher_suites=tls12 or None,
                                 tls13_custom_cipher_suites=tls13 or None)
    conf = oss.HttpsConfiguration(tls=oss.TLS(enable=True, tls_versions=versions.split(",")),
                                  cipher_suite=cipher)
    r = client.put_bucket_https_config(oss.PutBucketHttpsConfigRequest(bucket=bucket, https_configuration=conf))
    print(r.request_id)


if __name__ == "__main__":
    main()
