"""A SYN flood for the exhaustion tests: COUNT TCP SYNs from --src to --dst:--port, each from
a new source port and sequence number, sent as fast as a raw socket takes them. Run it inside a
lab namespace (never on a real network):

    python3 tests/peers/syn_flood.py --src 198.51.100.20 --dst 198.51.100.130 --port 502 \
        --count 100000

Prints one JSON line: {"sent": N, "seconds": S}. The sending host's own stack answers the
server's SYN-ACKs with resets (no socket owns them), as a real flooding host's would.
"""

import argparse
import json
import random
import socket
import struct
import time


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn(src, dst, sport, dport, seq):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, socket.IPPROTO_TCP, 0, src, dst
    )
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    src, dst = socket.inet_aton(args.src), socket.inet_aton(args.dst)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    rng = random.Random(62443)
    started = time.monotonic()
    sent = 0
    for _ in range(args.count):
        frame = syn(src, dst, rng.randint(1024, 65535), args.port, rng.getrandbits(32))
        try:
            sock.sendto(frame, (args.dst, 0))
            sent += 1
        except BlockingIOError:
            pass
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - started, 3)}))


if __name__ == "__main__":
    main()
