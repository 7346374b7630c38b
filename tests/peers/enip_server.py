"""An EtherNet/IP server: cpppo's Logix simulator (pinned in tests/requirements.txt) with a
few tags of known initial values, for the end-to-end tests and the demo. Run it with the
venv's python inside the PLC's namespace:

    .venv/bin/python tests/peers/enip_server.py --host 198.51.100.130 [--port 44818]
        [--lifetime 300] [--as-shipped]

It serves TCP and UDP on --host:--port only (cpppo binds every interface unless told an
address) and holds the tags of `enip_tags.py`:

    Line1_Speed      INT      1500
    Line1_Count      DINT     70000
    Recipe_Setpoint  DINT     250000
    Secret           INT[4]   11, 22, 33, 44

Output, one JSON object per line on stdout:

    {"event": "ready", "host": ..., "port": ...}   listening
    {"event": "tags", "tags": {NAME: VALUE, ...}}   on SIGUSR1: the current values
    {"event": "final", "tags": {...}}              at exit (SIGTERM, SIGINT, --lifetime)

The dumps read the simulator's own memory, never the network, so they tell what the server
holds whatever the firewall let through. Arrays are lists, scalars numbers.

One extension of cpppo (`answer_unsupported_services`): a request for a service code the
simulator does not implement is answered as a real controller answers it, with a CIP error
reply (the service | 0x80, general status 0x08, service not supported), and the session goes
on. cpppo as it is cannot parse such a request at all (its parser takes the unknown code for
a reply and runs out of bytes) and answers the whole encapsulation message with an error
status and no reply (SendRRData, status 0x08), then closes the session. That is not what a
controller does, and it is what `on_deny: refuse` relies on: otfw sends the target a refused
request with its service code replaced by one CIP reserves (0x7F), and requires the target's
CIP error for it, which it restores for the client. The extension applies wherever cpppo
parses a request: alone, inside a Multiple Service Packet (the packet's other requests are
served), inside an Unconnected Send, on a connection. `--as-shipped` leaves it out, for the
test of a target that cannot answer the reserved service.
"""

import argparse
import json
import logging
import signal
import sys
import threading
import time

import cpppo
from cpppo.server.enip import device
from cpppo.server.enip import main as enip_main
from cpppo.server.enip.parser import EPATH, USINT, octets, octets_noop

from enip_tags import TAGS, declaration

# How long the simulator may take to bind its sockets.
BIND_TIMEOUT = 20.0


# CIP general status: service not supported.
SERVICE_NOT_SUPPORTED = 0x08


def answer_unsupported_services():
    """Makes the simulator answer every request service code (0x00..0x7F) it has no parser for
    with a CIP error reply, general status 0x08 (service not supported).

    cpppo's objects share one parser, which dispatches on the service code. For each code
    missing there this registers a parser that reads the service, the request path and any
    data, and `device.Object.request`, which the other objects fall back to for a service they
    do not handle, answers those codes with `service | 0x80, 0, 0x08, 0` (no additional
    status, no data). Returns the codes added.
    """
    parser = device.Object.parser
    added = set()
    for code in range(0x80):
        if parser.encode(code) in device.Object.service:
            continue
        service = USINT(context="service")
        service[True] = path = EPATH(context="path")
        path[True] = data = octets("data", context="unsupported", terminal=True)
        data[True] = data
        path[None] = octets_noop("nodata", terminal=True)
        device.Object.register_service_parser(
            number=code,
            name=f"Unsupported 0x{code:02X}",
            short="unsupported",
            machine=service,
        )
        added.add(code)

    handled = device.Object.request

    def request(self, data, addr=None):
        code = data.get("service") if data else None
        if code not in added:
            return handled(self, data, addr=addr)
        data.service = code | 0x80
        data.status = SERVICE_NOT_SUPPORTED
        data.pop("status_ext", None)
        data.input = bytearray([code | 0x80, 0, SERVICE_NOT_SUPPORTED, 0])
        return True

    device.Object.request = request
    return added


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def snapshot():
    """The tags' current values, from the simulator's memory."""
    values = {}
    for name in TAGS:
        attribute = enip_main.tags[name].attribute
        if attribute.scalar:
            values[name] = attribute.value
        else:
            values[name] = list(attribute[0 : len(attribute)])
    return values


def initialise():
    for name, (_, _, values) in TAGS.items():
        attribute = enip_main.tags[name].attribute
        if attribute.scalar:
            attribute.value = values[0]
        else:
            attribute[0 : len(values)] = values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="address to listen on (the PLC's)")
    parser.add_argument("--port", type=int, default=44818)
    parser.add_argument(
        "--lifetime", type=float, default=300.0, help="seconds until the server exits"
    )
    parser.add_argument(
        "--as-shipped",
        action="store_true",
        help="cpppo as it is: a request for a service it does not implement ends the session",
    )
    args = parser.parse_args()
    # cpppo logs to the root logger; keep stdout for the JSON lines.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    if not args.as_shipped:
        answer_unsupported_services()

    control = cpppo.dotdict()
    control["done"] = False
    control["disable"] = False
    argv = ["--no-config", "-a", f"{args.host}:{args.port}"]
    argv += [declaration(name) for name in TAGS]
    simulator = threading.Thread(
        target=enip_main.main,
        kwargs={"argv": argv, "server": cpppo.dotdict(control=control)},
        daemon=True,
    )
    simulator.start()

    deadline = time.monotonic() + BIND_TIMEOUT
    while control.get("address") is None:
        if not simulator.is_alive() or time.monotonic() > deadline:
            emit("failed", detail="the simulator did not bind")
            sys.exit(1)
        time.sleep(0.05)
    initialise()
    emit("ready", host=args.host, port=args.port)

    stop = threading.Event()
    dump = threading.Event()

    def on_stop(*_):
        stop.set()

    def on_dump(*_):
        dump.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_dump)

    end = time.monotonic() + args.lifetime
    while not stop.is_set() and time.monotonic() < end and simulator.is_alive():
        if dump.is_set():
            dump.clear()
            emit("tags", tags=snapshot())
        time.sleep(0.05)
    emit("final", tags=snapshot())
    control["done"] = True
    simulator.join(timeout=2.0)


if __name__ == "__main__":
    main()
