"""Hand-made OSS requests: an independent V1 signer and `http.client`, so that the bad-input
suite can send what no SDK would (truncated XML, 10 MiB, wrong Content-MD5, odd hosts)."""

import base64
import hashlib
import hmac
import http.client
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from email.utils import formatdate

DISABLED = "<HttpsConfiguration><TLS><Enable>false</Enable></TLS></HttpsConfiguration>"


def sign_v1(secret: str, method: str, resource: str, headers: dict) -> str:
    """base64(HMAC-SHA1(secret, StringToSign)) as docs/oss-https-config-api.md defines it."""
    lower = {k.lower(): v for k, v in headers.items()}
    oss_headers = "".join(
        f"{k}:{lower[k]}\n" for k in sorted(k for k in lower if k.startswith("x-oss-"))
    )
    date = lower.get("x-oss-date") or lower.get("date", "")
    string_to_sign = "\n".join(
        [method, lower.get("content-md5", ""), lower.get("content-type", ""), date,
         oss_headers + resource]
    )
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def sign_v4(secret: str, method: str, bucket: str, headers: dict, region: str = "cn-hangzhou",
            query: str = "httpsConfig") -> str:
    """The OSS4-HMAC-SHA256 Authorization value, as docs/oss-https-config-api.md defines it
    (default-signed headers only: x-oss-*, content-type, content-md5)."""
    lower = {k.lower(): v.strip() for k, v in headers.items()}
    date = lower["x-oss-date"]
    day = date[:8]
    signed = sorted(k for k in lower if k.startswith("x-oss-") or k in ("content-type", "content-md5"))
    canonical_headers = "".join(f"{k}:{lower[k]}\n" for k in signed)
    payload = lower.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")
    canonical = "\n".join([method, f"/{bucket}/", query, canonical_headers, "", payload])
    scope = f"{day}/{region}/oss/aliyun_v4_request"
    to_sign = "\n".join(["OSS4-HMAC-SHA256", date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("aliyun_v4" + secret).encode()
    for part in (day, region, "oss", "aliyun_v4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"OSS4-HMAC-SHA256 Credential={{ak}}/{scope},Signature={signature}"


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    @property
    def error(self) -> dict:
        """The OSS error document's fields (asserting its shape: no namespace)."""
        root = ET.fromstring(self.body)
        assert root.tag == "Error", f"not an OSS error document: {self.body[:200]!r}"
        return {child.tag: (child.text or "") for child in root}

    @property
    def request_id(self) -> str:
        return self.headers.get("x-oss-request-id", "")


class Raw:
    """Signed or unsigned requests to one server, over `http.client`."""

    def __init__(self, port: int, access_key_id: str, secret: str):
        self.port = port
        self.access_key_id = access_key_id
        self.secret = secret

    def request(self, method: str, path: str, body=b"", *, bucket=None, headers=None,
                sign=True, date=None, secret=None, access_key_id=None,
                encode_chunked=False, timeout=60.0) -> Reply:
        """`path` includes the query. `bucket` names the signed resource `/<bucket>/?httpsConfig`
        (default: the first path segment)."""
        headers = dict(headers or {})
        headers.setdefault("Date", date or formatdate(time.time(), usegmt=True))
        if sign:
            if bucket is None:
                bucket = path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
            signature = sign_v1(secret or self.secret, method, f"/{bucket}/?httpsConfig", headers)
            headers["Authorization"] = f"OSS {access_key_id or self.access_key_id}:{signature}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if encode_chunked:
                conn.request(method, path, body=body, headers=headers, encode_chunked=True)
            else:
                conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def put(self, bucket: str, body: bytes, content_md5=True, **kw) -> Reply:
        """Sends (and so signs) Content-MD5 for a bytes body unless told not to, as the v2 SDKs
        do: the server refuses a signature used twice, and without it two PUTs of one bucket
        in the same second would carry the same one."""
        if content_md5 and isinstance(body, (bytes, bytearray)):
            headers = dict(kw.pop("headers", None) or {})
            if not any(k.lower() == "content-md5" for k in headers):
                headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
            kw["headers"] = headers
        return self.request("PUT", f"/{bucket}/?httpsConfig", body, bucket=bucket, **kw)

    def get(self, bucket: str, **kw) -> Reply:
        return self.request("GET", f"/{bucket}/?httpsConfig", bucket=bucket, **kw)


def config_xml(versions, enable=True) -> bytes:
    tls = "".join(f"<TLSVersion>{v}</TLSVersion>" for v in versions)
    return (f"<HttpsConfiguration><TLS><Enable>{str(enable).lower()}</Enable>{tls}</TLS>"
            "</HttpsConfiguration>").encode()


def parse_config(body: bytes) -> dict:
    """A GET body as {'enable': bool, 'versions': [...]} (asserting there is no namespace)."""
    root = ET.fromstring(body)
    assert root.tag == "HttpsConfiguration", body[:200]
    enable = root.findtext("TLS/Enable")
    assert enable in ("true", "false"), body[:200]
    return {"enable": enable == "true", "versions": [e.text for e in root.findall("TLS/TLSVersion")]}


def assert_not_stored(raw: "Raw", bucket: str) -> None:
    """GET shows the never-set default: nothing was written for `bucket`."""
    r = raw.get(bucket)
    assert r.status == 200, r.body
    assert parse_config(r.body) == {"enable": False, "versions": []}, r.body
