"""What the SDK suite's server is configured with: its endpoint domain and access keys."""

from pathlib import Path

DOMAIN = "oss.test"
REGION = "cn-hangzhou"

KEYS = {
    # id: (secret, allow, bucket patterns)
    "AKADMIN": ("admin-secret", ["oss:PutBucketHttpsConfig", "oss:GetBucketHttpsConfig"], ["*"]),
    "AKREAD": ("read-secret", ["oss:GetTLSVersion"], ["*"]),
    "AKLOGS": ("logs-secret", ["oss:PutTLSVersion", "oss:GetTLSVersion"], ["logs-*"]),
}


def secret(key_id: str) -> str:
    return KEYS[key_id][0]


def write_credentials(path: Path) -> Path:
    """The credentials file, in the issue's TOML form."""
    lines = []
    for key_id, (key_secret, allow, buckets) in KEYS.items():
        lines += [
            "[[key]]",
            f'id = "{key_id}"',
            f'secret = "{key_secret}"',
            "allow = [" + ", ".join(f'"{a}"' for a in allow) + "]",
            "buckets = [" + ", ".join(f'"{b}"' for b in buckets) + "]",
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def next_second() -> None:
    """Returns once the wall clock's second has changed. V1 and V4 dates have one-second
    resolution, and a body the signature does not cover (oss2 sends no Content-MD5) makes two
    PUTs of one bucket in the same second carry the same signature, which the server refuses as
    a replay: what a client must do between two such PUTs is wait for a new second."""
    import time

    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.01)  # poll interval of the clock, not a guess at a duration
