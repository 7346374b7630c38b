"""A Modbus/TCP server (pymodbus, pinned in tests/requirements.txt) for the end-to-end tests
and the demo. Run it with the venv's python inside the PLC's namespace:

    .venv/bin/python tests/peers/modbus_server.py --host 198.51.100.30 [--port 502]

It serves every unit id from one datastore with known initial values (protocol addresses,
0-based as on the wire):

    holding registers 0..99   1000 + address
    input registers   0..99   2000 + address
    coils             0..63   on where address % 3 == 0
    discrete inputs   0..63   on where address % 2 == 0

Output, one JSON object per line on stdout:

    {"event": "ready", "host": ..., "port": ...}   listening
    {"event": "datastore", ...}                    on SIGUSR1: the current values
    {"event": "final", ...}                        at exit (SIGTERM, SIGINT, --lifetime)

The datastore dumps read the server's own memory, so they tell what the server holds
whatever the firewall let through. The server exits by itself after --lifetime seconds.

It answers Read Device Identification (function 43, MEI type 14) with the objects of
IDENTITY (basic, regular and one extended object), as a PLC describes itself.
"""

import argparse
import asyncio
import json
import logging
import signal
import sys

from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

REGISTERS = 100
BITS = 64

# Read Device Identification objects by id: 0-2 basic, 3-6 regular, 0x80.. extended.
IDENTITY = {
    0x00: "otfw lab",
    0x01: "OTFW-PLC-1",
    0x02: "v1.2.3",
    0x03: "https://example.invalid/otfw",
    0x04: "otfw test PLC",
    0x05: "pymodbus simulator",
    0x06: "cell-1 line",
    0x80: "rack 2 slot 0",
}


def initial_values():
    """The datastore's initial values, by table."""
    return {
        "holding_registers": [1000 + address for address in range(REGISTERS)],
        "input_registers": [2000 + address for address in range(REGISTERS)],
        "coils": [address % 3 == 0 for address in range(BITS)],
        "discrete_inputs": [address % 2 == 0 for address in range(BITS)],
    }


def device():
    """One device for every unit id (id 0), with four separate tables."""
    values = initial_values()
    return SimDevice(
        id=0,
        simdata=(
            [SimData(0, values=values["coils"], datatype=DataType.BITS)],
            [SimData(0, values=values["discrete_inputs"], datatype=DataType.BITS)],
            [SimData(0, values=values["holding_registers"], datatype=DataType.REGISTERS)],
            [SimData(0, values=values["input_registers"], datatype=DataType.REGISTERS)],
        ),
    )


async def snapshot(server):
    """The current values, read from the server's memory (not over the network)."""
    tables = {
        "coils": (1, BITS),
        "discrete_inputs": (2, BITS),
        "holding_registers": (3, REGISTERS),
        "input_registers": (4, REGISTERS),
    }
    values = {}
    for name, (function, count) in tables.items():
        read = await server.async_getValues(1, function, 0, count)
        values[name] = [bool(v) for v in read] if function <= 2 else [int(v) for v in read]
    return values


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="address to listen on (the PLC's)")
    parser.add_argument("--port", type=int, default=502)
    parser.add_argument(
        "--lifetime", type=float, default=300.0, help="seconds until the server exits"
    )
    args = parser.parse_args()
    # pymodbus logs to the root logger; keep stdout for the JSON lines.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

    identity = ModbusDeviceIdentification(info={k: v.encode() for k, v in IDENTITY.items()})
    server = ModbusTcpServer(device(), identity=identity, address=(args.host, args.port))
    await server.serve_forever(background=True)
    emit("ready", host=args.host, port=args.port)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    dump = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump.set)

    deadline = loop.time() + args.lifetime
    while not stop.is_set() and loop.time() < deadline:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(dump.wait())]
        await asyncio.wait(
            waiters,
            timeout=max(0.0, deadline - loop.time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        for waiter in waiters:
            waiter.cancel()
        if dump.is_set():
            dump.clear()
            emit("datastore", **await snapshot(server))
    emit("final", **await snapshot(server))
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
