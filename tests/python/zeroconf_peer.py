"""A python-zeroconf peer for Gambi's discovery tests: an independent mDNS / DNS-SD implementation
that either browses (and prints every service it resolves) or registers a service (until its stdin
closes or it gets SIGTERM, then unregisters with goodbye packets).

Output is one JSON object per line on stdout, flushed at once, so the Rust test can follow it live.

    zeroconf_peer.py browse TYPE SECONDS
    zeroconf_peer.py register TYPE INSTANCE HOST PORT ADDRESS [KEY=VALUE ...]

HOST is the SRV target: `HOST.local.`, or HOST itself when it ends with a dot. ADDRESS `-`
publishes no address record for it (as the TypeScript hub's advertisement is seen, whose target
only the system resolver knows).
"""

import json
import signal
import socket
import sys
import threading
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf


def emit(obj):
    obj["at"] = round(time.time(), 3)
    print(json.dumps(obj), flush=True)


def text(value):
    return None if value is None else value.decode("utf-8", "replace")


def browse(service_type, seconds):
    zc = Zeroconf(ip_version=IPVersion.V4Only)

    def on_change(zeroconf, service_type, name, state_change):
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            info = zeroconf.get_service_info(service_type, name, timeout=3000)
            if info is None:
                return
            emit(
                {
                    "event": "found",
                    "type": service_type,
                    "name": name,
                    "server": info.server,
                    "port": info.port,
                    "addresses": info.parsed_addresses(),
                    "properties": {text(k): text(v) for k, v in info.properties.items()},
                }
            )
        elif state_change is ServiceStateChange.Removed:
            emit({"event": "removed", "type": service_type, "name": name})

    browser = ServiceBrowser(zc, service_type, handlers=[on_change])
    emit({"event": "browsing", "type": service_type})
    time.sleep(seconds)
    browser.cancel()
    zc.close()


def register(service_type, instance, host, port, address, pairs):
    properties = dict(pair.split("=", 1) for pair in pairs)
    info = ServiceInfo(
        service_type,
        f"{instance}.{service_type}",
        addresses=[] if address == "-" else [socket.inet_aton(address)],
        port=port,
        properties=properties,
        server=host if host.endswith(".") else f"{host}.local.",
    )
    zc = Zeroconf(ip_version=IPVersion.V4Only)
    zc.register_service(info)
    emit({"event": "registered", "name": info.name})

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def wait_for_stdin():
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_stdin, daemon=True).start()
    done.wait()
    zc.unregister_service(info)
    emit({"event": "unregistered", "name": info.name})
    zc.close()


def main(argv):
    if len(argv) >= 3 and argv[0] == "browse":
        browse(argv[1], float(argv[2]))
    elif len(argv) >= 6 and argv[0] == "register":
        register(argv[1], argv[2], argv[3], int(argv[4]), argv[5], argv[6:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
