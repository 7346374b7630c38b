"""TCP-level evasions against a real Modbus/TCP or EtherNet/IP server, for the end-to-end tests.

Each case sends, on a real connection, a write request in a segment the firewall could frame
but the server's TCP stack would not deliver as framed (or, in the lab, would deliver although
a router would not have): urgent data, a bad checksum, a TTL of 1, data on a SYN, data after a
FIN, data after a RST. The connection itself is opened by the kernel; the crafted segments are
sent with a raw socket at the sequence numbers the kernel's socket is at (read in TCP repair
mode), so a case that leaves the connection alive ends with an ordinary read on it.

Prints one JSON line per case: {"case", "injected", "after"} where "after" is the result of
the read afterwards ("ok" with the value, "timeout", "closed", "reset", or "skipped" for cases
that end the connection).

Usage: tcp_evasion.py {modbus|enip} SERVER PORT CASE... (needs root: raw sockets, TCP repair)
"""

import json
import random
import socket
import struct
import sys
import time

TCP_REPAIR = 19
TCP_REPAIR_QUEUE = 20
TCP_QUEUE_SEQ = 21
TCP_RECV_QUEUE = 1
TCP_SEND_QUEUE = 2
TCP_REPAIR_OFF_NO_WP = -1

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

TIMEOUT = 2.0
# What the server gets to act on an injected segment before the next step.
SETTLE = 0.3


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Modbus:
    """Holding register 0: read it, or write 0x2222 to it (refused by a read-only conduit)."""

    def __init__(self):
        self.tid = 0

    def open(self, sock):
        pass

    def _adu(self, pdu):
        self.tid += 1
        return struct.pack("!HHHB", self.tid, 0, len(pdu) + 1, 1) + pdu

    def read_request(self):
        return self._adu(struct.pack("!BHH", 3, 0, 1))

    def write_request(self):
        return self._adu(struct.pack("!BHH", 6, 0, 0x2222))

    def read(self, sock):
        sock.sendall(self.read_request())
        reply = recv_exact(sock, 11)
        return struct.unpack("!H", reply[9:11])[0]


class Enip:
    """Tag Line1_Speed (INT): Read Tag, or Write Tag 7 (refused by a read-only conduit), in
    SendRRData on a registered session."""

    TAG = b"Line1_Speed"

    def __init__(self):
        self.session = 0

    def open(self, sock):
        sock.sendall(self._encap(0x65, struct.pack("<HH", 1, 0)))
        header = recv_exact(sock, 24)
        length = struct.unpack("<H", header[2:4])[0]
        recv_exact(sock, length)
        self.session = struct.unpack("<I", header[4:8])[0]

    def _encap(self, command, body):
        return struct.pack("<HHII8sI", command, len(body), self.session, 0, b"otfw-e2e", 0) + body

    def _path(self):
        name = self.TAG + (b"\0" if len(self.TAG) % 2 else b"")
        segment = bytes([0x91, len(self.TAG)]) + name
        return bytes([len(segment) // 2]) + segment

    def _rr(self, cip):
        cpf = struct.pack("<IHH", 0, 5, 2) + struct.pack("<HH", 0, 0)
        cpf += struct.pack("<HH", 0xB2, len(cip)) + cip
        return self._encap(0x6F, cpf)

    def read_request(self):
        return self._rr(bytes([0x4C]) + self._path() + struct.pack("<H", 1))

    def write_request(self):
        return self._rr(bytes([0x4D]) + self._path() + struct.pack("<HHh", 0xC3, 1, 7))

    def read(self, sock):
        sock.sendall(self.read_request())
        header = recv_exact(sock, 24)
        length = struct.unpack("<H", header[2:4])[0]
        body = recv_exact(sock, length)
        # Interface handle, timeout, item count, two item headers (the first empty), then CIP:
        # service, reserved, general status, extended size, type, value.
        cip = body[16:]
        if cip[2] != 0:
            raise RuntimeError(f"CIP status {cip[2]:#x}")
        return struct.unpack("<h", cip[6:8])[0]


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def sequence_numbers(sock):
    """(next sequence number to send, next to receive) of an established socket."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        snd = struct.unpack("I", sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        rcv = struct.unpack("I", sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
    return snd, rcv


class Injector:
    def __init__(self, src, dst, sport, dport):
        self.src, self.dst, self.sport, self.dport = src, dst, sport, dport
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def send(self, seq, ack, flags, payload=b"", ttl=64, urgent=0, corrupt=False):
        offset = 5 << 4
        tcp = struct.pack(
            "!HHIIBBHHH", self.sport, self.dport, seq, ack, offset, flags, 502, 0, urgent
        )
        pseudo = socket.inet_aton(self.src) + socket.inet_aton(self.dst)
        pseudo += struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp) + len(payload))
        csum = checksum(pseudo + tcp + payload)
        if corrupt:
            csum ^= 0x0F0F
        tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
        total = 20 + len(tcp) + len(payload)
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            total,
            random.randint(1, 0xFFFF),
            0x4000,
            ttl,
            socket.IPPROTO_TCP,
            0,
            socket.inet_aton(self.src),
            socket.inet_aton(self.dst),
        )
        self.raw.sendto(ip + tcp + payload, (self.dst, 0))
        time.sleep(SETTLE)


def connect(server, port, proto):
    sock = socket.create_connection((server, port), timeout=TIMEOUT)
    proto.open(sock)
    first = proto.read(sock)
    return sock, first


def read_after(sock, proto):
    try:
        return {"ok": proto.read(sock)}
    except socket.timeout:
        return "timeout"
    except ConnectionResetError:
        return "reset"
    except (ConnectionError, OSError):
        return "closed"


def abort(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def run_case(case, proto, server, port):
    if case == "data_on_syn":
        src = local_address(server, port)
        sport = random.randint(40000, 60000)
        inject = Injector(src, server, sport, port)
        inject.send(random.randint(0, 2**32 - 1), 0, SYN, proto.write_request())
        return {"case": case, "injected": True, "after": "skipped"}
    sock, _ = connect(server, port, proto)
    src, sport = sock.getsockname()
    snd, rcv = sequence_numbers(sock)
    inject = Injector(src, server, sport, port)
    write = proto.write_request()
    keeps = True
    if case == "urgent":
        inject.send(snd, rcv, PSH | ACK | URG, write, urgent=1)
    elif case == "bad_checksum":
        inject.send(snd, rcv, PSH | ACK, write, corrupt=True)
    elif case == "ttl":
        inject.send(snd, rcv, PSH | ACK, write, ttl=1)
    elif case == "after_fin":
        inject.send(snd, rcv, FIN | ACK)
        inject.send(snd + 1, rcv, PSH | ACK, write)
        inject.send(snd, rcv, PSH | ACK, write)
        keeps = False
    elif case == "after_rst":
        inject.send(snd, rcv, RST)
        inject.send(snd, rcv, PSH | ACK, write)
        keeps = False
    else:
        raise SystemExit(f"unknown case {case}")
    after = read_after(sock, proto) if keeps else "skipped"
    abort(sock)
    return {"case": case, "injected": True, "after": after}


def local_address(server, port):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((server, port))
    address = probe.getsockname()[0]
    probe.close()
    return address


def main():
    if len(sys.argv) < 5:
        raise SystemExit(__doc__)
    protocol, server, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for case in sys.argv[4:]:
        proto = Modbus() if protocol == "modbus" else Enip()
        print(json.dumps(run_case(case, proto, server, port)), flush=True)


if __name__ == "__main__":
    main()
