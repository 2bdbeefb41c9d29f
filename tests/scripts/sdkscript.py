"""What the SDK scripts of tests/tests/*.rs share: the test domain and region, names under
the domain resolved to 127.0.0.1, and waiting for a new second between oss2 PUTs."""
import socket
import time

DOMAIN = "oss.test"
REGION = "cn-hangzhou"


def resolve_test_names_to_loopback():
    """Every name under DOMAIN (and DOMAIN itself) resolves to 127.0.0.1 in this process."""
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if isinstance(host, str) and (host == DOMAIN or host.endswith("." + DOMAIN)):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    socket.getaddrinfo = resolve


def next_second():
    """oss2 signs no body: two PUTs in one second would carry one signature (a replay)."""
    now = int(time.time())
    while int(time.time()) == now:
        time.sleep(0.02)
