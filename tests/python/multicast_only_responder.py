"""An mDNS responder that answers the way the TypeScript hub's does (bonjour-service over
multicast-dns), for Gambi's discovery tests: every answer is multicast to 224.0.0.251:5353, never
sent to a querier's own port (a "legacy unicast" querier gets nothing directly), and the SRV target
is a bare host name with no address record published for it.

    multicast_only_responder.py TYPE INSTANCE TARGET PORT [KEY=VALUE ...]

TYPE is `_gambi._tcp.local.`; TARGET is the SRV target as bonjour-service writes it (the machine's
host name, like `vm`). It announces the service once at start, then answers PTR questions for TYPE
(the PTR, with the SRV and TXT as additional records) and SRV, TXT or ANY questions for the
instance, until its stdin closes. One JSON line per event on stdout.
"""

import json
import select
import socket
import struct
import sys
import time

GROUP = "224.0.0.251"
PORT = 5353
PTR, TXT, SRV, ANY = 12, 16, 33, 255


def emit(obj):
    obj["at"] = round(time.time(), 3)
    print(json.dumps(obj), flush=True)


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode()
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def read_name(packet, at):
    labels, jumps, end = [], 0, None
    while True:
        length = packet[at]
        if length == 0:
            at += 1
            break
        if length & 0xC0 == 0xC0:
            if end is None:
                end = at + 2
            at = ((length & 0x3F) << 8) | packet[at + 1]
            jumps += 1
            if jumps > 64:
                raise ValueError("pointer loop")
            continue
        labels.append(packet[at + 1 : at + 1 + length].decode("utf-8", "replace"))
        at += 1 + length
    return ".".join(labels).lower() + ".", (end if end is not None else at)


def record(name, kind, ttl, data, flush=False):
    rrclass = 0x8001 if flush else 0x0001
    return encode_name(name) + struct.pack("!HHIH", kind, rrclass, ttl, len(data)) + data


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    service_type, instance, target, port = argv[0], argv[1], argv[2], int(argv[3])
    fullname = f"{instance}.{service_type}"
    txt = b"".join(bytes([len(item.encode())]) + item.encode() for item in argv[4:]) or b"\0"
    ptr_rr = record(service_type, PTR, 28800, encode_name(fullname))
    srv_rr = record(fullname, SRV, 120, struct.pack("!HHH", 0, 0, port) + encode_name(target), flush=True)
    txt_rr = record(fullname, TXT, 4500, txt, flush=True)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("", PORT))
    membership = struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton("0.0.0.0"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)

    def respond(answers, additionals):
        header = struct.pack("!HHHHHH", 0, 0x8400, 0, len(answers), 0, len(additionals))
        sock.sendto(header + b"".join(answers) + b"".join(additionals), (GROUP, PORT))

    respond([ptr_rr, srv_rr, txt_rr], [])
    emit({"event": "registered", "name": fullname, "target": target})

    wanted_type, wanted_name = service_type.lower(), fullname.lower()
    while True:
        ready, _, _ = select.select([sock, sys.stdin], [], [])
        if sys.stdin in ready and not sys.stdin.read(1):
            break
        if sock not in ready:
            continue
        packet, source = sock.recvfrom(9000)
        try:
            _, flags, questions = struct.unpack("!HHH", packet[:6])
            if flags & 0x8000:
                continue
            at = 12
            for _ in range(questions):
                name, at = read_name(packet, at)
                kind, _ = struct.unpack("!HH", packet[at : at + 4])
                at += 4
                if name == wanted_type and kind in (PTR, ANY):
                    respond([ptr_rr], [srv_rr, txt_rr])
                elif name == wanted_name and kind in (SRV, TXT, ANY):
                    respond({SRV: [srv_rr], TXT: [txt_rr], ANY: [srv_rr, txt_rr]}[kind], [])
                else:
                    continue
                emit({"event": "answered", "question": name, "type": kind, "from": f"{source[0]}:{source[1]}"})
        except (ValueError, IndexError, struct.error):
            continue
    emit({"event": "unregistered", "name": fullname})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
