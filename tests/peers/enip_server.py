"""An EtherNet/IP server: cpppo's Logix simulator (pinned in tests/requirements.txt) with a
few tags of known initial values, for the end-to-end tests and the demo. Run it with the
venv's python inside the PLC's namespace:

    .venv/bin/python tests/peers/enip_server.py --host 198.51.100.130 [--port 44818]
        [--lifetime 300]

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
"""

import argparse
import json
import logging
import signal
import sys
import threading
import time

import cpppo
from cpppo.server.enip import main as enip_main

from enip_tags import TAGS, declaration

# How long the simulator may take to bind its sockets.
BIND_TIMEOUT = 20.0


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
    args = parser.parse_args()
    # cpppo logs to the root logger; keep stdout for the JSON lines.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

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
