"""VLAN-tagged UDP frames through the lab bridge, for the end-to-end tests (the lab's kernel has
no VLAN devices, so the frames are written and read with packet sockets).

  vlan_frames.py send IFACE DST_MAC SRC_IP DST_IP PORT VLAN COUNT
      COUNT 802.1Q-tagged UDP datagrams, payload b"otfw-vlan-<n>", 20 ms apart.
  vlan_frames.py capture IFACE PORT SECONDS
      prints "ready", then after SECONDS one JSON line: the datagrams to PORT seen, with the
      VLAN ids they carried (in the frame, or in the packet's metadata where the driver took
      the tag out) and whether every payload arrived intact.

Needs root (packet sockets).
"""

import json
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_8021Q = 0x8100
ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4
PREFIX = b"otfw-vlan-"


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(dst_mac, src_mac, src_ip, dst_ip, port, vlan, payload):
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", 40000, port, udp_len, 0) + payload
    udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 1, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    eth = dst_mac + src_mac + struct.pack("!HHH", ETH_P_8021Q, vlan, ETH_P_IP)
    return eth + ip + udp


def send(iface, dst_mac, src_ip, dst_ip, port, vlan, count):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    src_mac = s.getsockname()[4]
    dst = bytes.fromhex(dst_mac.replace(":", ""))
    for n in range(count):
        s.send(frame(dst, src_mac, src_ip, dst_ip, port, vlan, PREFIX + str(n).encode()))
        time.sleep(0.02)
    print(json.dumps({"sent": count}), flush=True)


def capture(iface, port, seconds):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((iface, 0))
    s.settimeout(0.2)
    print("ready", flush=True)
    seen, intact = [], True
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            data, anc, _, addr = s.recvmsg(4096, socket.CMSG_SPACE(64))
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        vlan = None
        for level, kind, value in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(value) >= 20:
                status = struct.unpack_from("I", value, 0)[0]
                tci = struct.unpack_from("H", value, 16)[0]
                if status & TP_STATUS_VLAN_VALID:
                    vlan = tci & 0x0FFF
        offset = 14
        ethertype = struct.unpack_from("!H", data, 12)[0]
        if ethertype == ETH_P_8021Q:
            vlan = struct.unpack_from("!H", data, 14)[0] & 0x0FFF
            ethertype = struct.unpack_from("!H", data, 16)[0]
            offset = 18
        if ethertype != ETH_P_IP or data[offset + 9] != 17:
            continue
        ihl = (data[offset] & 0x0F) * 4
        udp = data[offset + ihl:]
        if struct.unpack_from("!H", udp, 2)[0] != port:
            continue
        payload = udp[8:struct.unpack_from("!H", udp, 4)[0]]
        if not payload.startswith(PREFIX):
            continue
        intact = intact and payload[len(PREFIX):].isdigit()
        seen.append({"vlan": vlan, "payload": payload.decode(errors="replace")})
    print(json.dumps({"received": len(seen), "vlans": sorted({f["vlan"] or 0 for f in seen}),
                      "intact": intact, "payloads": [f["payload"] for f in seen]}), flush=True)


def main():
    if sys.argv[1] == "send":
        iface, dst_mac, src_ip, dst_ip, port, vlan, count = sys.argv[2:9]
        send(iface, dst_mac, src_ip, dst_ip, int(port), int(vlan), int(count))
    elif sys.argv[1] == "capture":
        iface, port, seconds = sys.argv[2:5]
        capture(iface, int(port), float(seconds))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
