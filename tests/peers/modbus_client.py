"""A Modbus/TCP client (pymodbus, pinned in tests/requirements.txt) for the end-to-end tests
and the demo. Run it with the venv's python inside a client's namespace:

    .venv/bin/python tests/peers/modbus_client.py --host 198.51.100.30 [--port 502]
        [--unit 1] [--timeout 2] [--interval 0] OP [OP ...]

Each OP is `read_coils:ADDR:COUNT`, `read_discrete_inputs:ADDR:COUNT`,
`read_holding_registers:ADDR:COUNT`, `read_input_registers:ADDR:COUNT`,
`write_coil:ADDR:0|1`, `write_register:ADDR:VALUE`, `write_coils:ADDR:V,V,...` or
`write_registers:ADDR:V,V,...` (protocol addresses, 0-based as on the wire), or
`read_device_identification:OBJECT:CODE` (function 43/14 from object id OBJECT with read device
id code CODE: 1 basic, 2 regular, 3 extended, 4 one object). The ops run in order on one
connection (reopened after a failure) and each prints one JSON line:

    {"op": ..., "address": ..., "result": "ok", "values": [...]}   (values for reads)
    {"op": ..., "result": "ok", "objects": {"0": "...", ...}}      (device identification)
    {"op": ..., "result": "exception", "code": N}                 the server refused
    {"op": ..., "result": "timeout"}         no answer within --timeout (nothing retried)
    {"op": ..., "result": "reset"}           the connection was reset
    {"op": ..., "result": "closed"}          the peer closed the connection
    {"op": ..., "result": "connect_failed"}  no connection (refused or timed out)
    {"op": ..., "result": "error", "detail": ...}

The exit status is 0 when every line was printed, whatever the results. After a timeout the
connection is aborted (RST) instead of closed: a firewall that drops the rest of a refused
connection drops a FIN too, and the kernel would retransmit it for minutes.
"""

import argparse
import json
import logging
import socket
import struct
import sys
import time

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

READS = {
    "read_coils",
    "read_discrete_inputs",
    "read_holding_registers",
    "read_input_registers",
}
WRITES = {"write_coil", "write_register", "write_coils", "write_registers"}
IDENTIFICATION = "read_device_identification"


def parse_op(text):
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in READS | WRITES | {IDENTIFICATION}:
        raise argparse.ArgumentTypeError(f"bad op `{text}` (see --help)")
    name, address, arg = parts
    try:
        address = int(address, 0)
        if name in READS or name == IDENTIFICATION:
            arg = int(arg, 0)
        elif name in ("write_coil", "write_register"):
            arg = int(arg, 0)
        else:
            arg = [int(value, 0) for value in arg.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"bad op `{text}`: {error}") from None
    return name, address, arg


def run_op(client, unit, name, address, arg):
    """Returns the result fields of one op."""
    if name == IDENTIFICATION:
        response = client.read_device_information(
            read_code=arg, object_id=address, device_id=unit
        )
        if response.isError():
            return {"result": "exception", "code": getattr(response, "exception_code", None)}
        objects = {
            str(k): (v.decode(errors="replace") if isinstance(v, bytes) else str(v))
            for k, v in response.information.items()
        }
        return {"result": "ok", "objects": objects}
    if name in READS:
        response = getattr(client, name)(address, count=arg, device_id=unit)
    elif name == "write_coil":
        response = client.write_coil(address, bool(arg), device_id=unit)
    elif name == "write_register":
        response = client.write_register(address, arg, device_id=unit)
    elif name == "write_coils":
        response = client.write_coils(address, [bool(v) for v in arg], device_id=unit)
    else:
        response = client.write_registers(address, arg, device_id=unit)
    if response.isError():
        return {"result": "exception", "code": getattr(response, "exception_code", None)}
    fields = {"result": "ok"}
    if name in ("read_coils", "read_discrete_inputs"):
        fields["values"] = [int(bit) for bit in response.bits[:arg]]
    elif name in READS:
        fields["values"] = list(response.registers)
    return fields


def abort(client):
    """Closes the connection with a RST (SO_LINGER 0) rather than a FIN."""
    if client.socket is not None:
        try:
            client.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        except OSError:
            pass
    client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=502)
    parser.add_argument("--unit", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=2.0)
    # Seconds between ops: a poller's pace (an HMI polls; it does not hammer).
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("ops", nargs="+", type=parse_op)
    args = parser.parse_args()
    # pymodbus logs failures itself; they go to stderr, results to stdout.
    logging.basicConfig(stream=sys.stderr, level=logging.CRITICAL)

    client = ModbusTcpClient(args.host, port=args.port, timeout=args.timeout, retries=0)
    for index, (name, address, arg) in enumerate(args.ops):
        if index and args.interval:
            time.sleep(args.interval)
        line = {"op": name, "address": address}
        try:
            if not client.connect():
                fields = {"result": "connect_failed"}
            else:
                fields = run_op(client, args.unit, name, address, arg)
        except ConnectionResetError:
            fields = {"result": "reset"}
        except ModbusIOException as error:
            fields = {"result": "timeout", "detail": str(error)}
        except ConnectionException as error:
            text = str(error)
            fields = {"result": "closed" if "closed" in text else "error", "detail": text}
        except OSError as error:
            fields = {"result": "error", "detail": f"{type(error).__name__}: {error}"}
        if fields["result"] == "timeout":
            abort(client)
        elif fields["result"] not in ("ok", "exception"):
            client.close()
        print(json.dumps({**line, **fields}), flush=True)
    client.close()


if __name__ == "__main__":
    main()
