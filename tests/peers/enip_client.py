"""An EtherNet/IP client for the end-to-end tests: cpppo's client or pycomm3 (both pinned in
tests/requirements.txt), sending the request shapes the tests need. Run it with the venv's
python inside a client's namespace:

    .venv/bin/python tests/peers/enip_client.py --client cpppo|pycomm3 --host 198.51.100.130
        [--port 44818] [--timeout 2] OP [OP ...]

Each OP runs on a connection of its own (TCP connect, RegisterSession, the request, close):

    list_identity             ListIdentity over TCP
    list_identity_udp         ListIdentity in a UDP datagram (cpppo only)
    read:TAG                  Read Tag in SendRRData, addressed straight to the Message Router
    read_ucs:TAG              Read Tag inside an Unconnected Send (route path 1/0)
    read_connected:TAG        Forward Open (pycomm3: Large Forward Open), then Read Tag in
                              SendUnitData
    multi_read:TAG,TAG,...    one Multiple Service Packet of Read Tags (cpppo: SendRRData;
                              pycomm3: connected)
    write:TAG:VALUE           Write Tag in SendRRData, addressed straight to the Message Router
    write_ucs:TAG:VALUE       Write Tag inside an Unconnected Send (route path 1/0)
    write_connected:TAG:VALUE Forward Open, then Write Tag in SendUnitData
    write_msp:TAG:VALUE       one Multiple Service Packet holding the Write Tag (cpppo: after a
                              Read Tag of Line1_Speed, in SendRRData; pycomm3: LogixDriver's
                              write of TAG and Line1_Count, connected)

A session op sends a write and then a read of the same tag on one session (one TCP
connection, one RegisterSession; the connected one on one Forward Open connection), each in
the op's shape, to see what a refused write leaves of the session:

    write_read:TAG:VALUE           write, then read, in SendRRData to the Message Router
    write_ucs_read:TAG:VALUE       write, then read, each inside an Unconnected Send
    write_connected_read:TAG:VALUE Forward Open, then write and read in SendUnitData
    write_msp_read:TAG:VALUE       a Multiple Service Packet of a Read Tag of Line1_Speed and
                                   the write (cpppo: SendRRData; pycomm3: connected), then
                                   the read alone (the same transport)

TAG is a name of `enip_tags.py` (its type comes from there), optionally with an element
(`Secret[2]`); reading an array tag without an element reads all its elements.

Each op prints one JSON line:

    {"op": ..., "result": "ok", "values": [...]}   reads: the values (multi_read: one list
                                                    per tag); writes and ListIdentity: []
    {"op": ..., "result": "status", "status": N}   the server answered with CIP status N
    {"op": ..., "result": "timeout"}               no answer within --timeout
    {"op": ..., "result": "reset"}                 the connection was reset
    {"op": ..., "result": "closed"}                the peer closed the connection
    {"op": ..., "result": "connect_failed"}        no connection (refused or timed out)
    {"op": ..., "result": "error", "detail": ...}

A session op prints one line with a step per request sent, in order; a step that got no
reply ends the session:

    {"op": ..., "result": "session", "steps": [STEP, ...]}
    STEP: {"result": "replies", "replies": [REPLY, ...], "session": S, "port": P, "ms": T}
          or the fields of a failure above ({"result": "timeout", ...}), with "ms"
    REPLY: {"service": N, "status": N} and, for a Read Tag answered with status 0,
           "values": [...]; one per request (a Multiple Service Packet's: one per entry)

S is the session handle and P the client's TCP port the request went out on, T how long it
took in milliseconds, N the CIP reply's service code and general status as the client decoded
them.

The exit status is 0 when every line was printed, whatever the results. After a failure the
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

from enip_tags import TAGS

CIP_TYPES = {"INT": (0xC3, "<h"), "DINT": (0xC4, "<i")}
TYPE_CODES = {code: fmt for code, fmt in CIP_TYPES.values()}

READS = {"read", "read_ucs", "read_connected", "multi_read"}
WRITES = {"write", "write_ucs", "write_connected", "write_msp"}
SESSIONS = {"write_read", "write_ucs_read", "write_connected_read", "write_msp_read"}
OTHERS = {"list_identity", "list_identity_udp"}


class Timeout(Exception):
    pass


class Closed(Exception):
    pass


class Status(Exception):
    def __init__(self, status):
        super().__init__(f"CIP status {status}")
        self.status = status


def base_name(tag):
    return tag.split("[", 1)[0]


def tag_type(tag):
    try:
        return TAGS[base_name(tag)]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown tag `{tag}` (see enip_tags.py)") from None


def parse_op(text):
    name, _, rest = text.partition(":")
    if name in OTHERS:
        if rest:
            raise argparse.ArgumentTypeError(f"`{name}` takes no argument")
        return name, None, None
    if name == "multi_read":
        tags = rest.split(",")
        for tag in tags:
            tag_type(tag)
        return name, tags, None
    if name in READS:
        tag_type(rest)
        return name, rest, None
    if name in WRITES or name in SESSIONS:
        tag, _, value = rest.partition(":")
        tag_type(tag)
        try:
            return name, tag, int(value, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad value in `{text}`") from None
    raise argparse.ArgumentTypeError(f"bad op `{text}` (see --help)")


def element_count(tag):
    """Elements a read of TAG returns: all of an array without an element, else one."""
    kind, count, _ = tag_type(tag)
    return 1 if "[" in tag else count


def classify(error):
    """The result fields of an exception, looking through wrapped causes."""
    seen = error
    while seen is not None:
        if isinstance(seen, Status):
            return {"result": "status", "status": seen.status}
        if isinstance(seen, Timeout) or isinstance(seen, socket.timeout):
            return {"result": "timeout"}
        if isinstance(seen, ConnectionResetError):
            return {"result": "reset"}
        if isinstance(seen, (Closed, BrokenPipeError, ConnectionAbortedError)):
            return {"result": "closed", "detail": str(seen)}
        if isinstance(seen, ConnectionRefusedError):
            return {"result": "connect_failed"}
        seen = seen.__cause__ or seen.__context__
    return {"result": "error", "detail": f"{type(error).__name__}: {error}"}


def step(request, where):
    """Runs one request of a session op: its STEP fields (see the module's docstring)."""
    begun = time.monotonic()
    try:
        replies = request()
        fields = {"result": "replies", "replies": replies, **where()}
    except Exception as error:  # every failure is a result
        fields = classify(error)
    fields["ms"] = round((time.monotonic() - begun) * 1000.0, 1)
    return fields


def steps(requests, where):
    """The STEPs of `requests` sent one after the other, up to the first that got no reply."""
    done = []
    for request in requests:
        done.append(step(request, where))
        if done[-1]["result"] != "replies":
            break
    return done


def ended_early(done):
    """Whether a session op's last STEP got no reply: its connection is aborted, not closed."""
    return done[-1]["result"] != "replies"


def values(data):
    """The values of a Read Tag reply's data: the type code, then the elements."""
    code, = struct.unpack_from("<H", data)
    fmt = TYPE_CODES[code][1]
    count = (len(data) - 2) // struct.calcsize("<" + fmt)
    return list(struct.unpack_from("<" + fmt * count, data, 2))


def abort(sock):
    """Closes a TCP socket with a RST (SO_LINGER 0) rather than a FIN."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


# --- cpppo -------------------------------------------------------------------------------


class Cpppo:
    """cpppo's client API (what `python -m cpppo.server.enip.client` runs)."""

    def __init__(self, host, port, timeout):
        from cpppo.server import network
        from cpppo.server.enip import client

        self.client = client
        self.host, self.port, self.timeout = host, port, timeout
        self.reset = False

        # cpppo's recv takes any socket error for an end of stream; note a reset, so that
        # it is told apart from the server closing the connection.
        @network.readable(default=None)
        def recv(conn, maxlen=4 * 1024):
            try:
                return conn.recv(maxlen)
            except ConnectionResetError:
                self.reset = True
                return b""
            except OSError:
                return b""

        network.recv = recv

    def connect(self, connected=False):
        cls = self.client.implicit if connected else self.client.connector
        try:
            return cls(host=self.host, port=self.port, timeout=self.timeout)
        except AssertionError as error:
            # No reply to RegisterSession / Forward Open in time.
            raise Timeout(str(error)) from error

    def operation(self, tag, value=None, routed=False):
        """cpppo's tag syntax: `TAG`, `TAG[a-b]`, `TAG=(TYPE)VALUE`."""
        kind, count, _ = tag_type(tag)
        text = tag
        if "[" not in tag and count > 1:
            text = f"{tag}[0-{count - 1}]"
        if value is not None:
            text += f"=({kind}){value}"
        route = {} if routed else {"route_path": [], "send_path": ""}
        return list(self.client.parse_operations([text], **route))[0]

    def harvest(self, connection, operations, multiple=False):
        """Sends the operations on an open connection (in one Multiple Service Packet if
        `multiple`); returns cpppo's (reply, status, value) for each."""
        begun = time.monotonic()
        self.reset = False
        results = []
        try:
            harvest = connection.synchronous(
                operations=operations,
                multiple=500 if multiple else 0,
                timeout=self.timeout,
            )
            for _, _, _, reply, status, value in harvest:
                results.append((reply, status, value))
        except AssertionError as error:
            if "No Reply" in str(error):
                raise Timeout(str(error)) from error
            raise
        if len(results) != len(operations):
            # cpppo's harvest ends early when the connection is reset or closed, and when no
            # reply comes in time.
            if self.reset:
                raise ConnectionResetError("the connection was reset")
            if time.monotonic() - begun >= self.timeout * 0.9:
                raise Timeout("no reply in time")
            raise Closed("the connection ended before every reply")
        return results

    def on_connection(self, connected, action, broken=lambda result: False):
        """Runs `action(connection)` on a new connection; closes it cleanly if that returns a
        result that is not `broken`, aborts it otherwise."""
        connection = self.connect(connected)
        sock = connection.conn
        clean = False
        try:
            with connection:
                result = action(connection)
            clean = not broken(result)
            return result
        finally:
            if clean:
                connection.close()
            else:
                abort(sock)
                # Nothing more to send on it (no Forward Close when collected).
                connection.conn = None

    def transact(self, operations, connected=False, multiple=False):
        """Sends the operations on a new connection; returns one value per operation."""

        def action(connection):
            results = []
            for _, status, value in self.harvest(connection, operations, multiple):
                if status not in (0, None):
                    raise Status(status)
                results.append(value)
            return results

        return self.on_connection(connected, action)

    def write_then_read(self, name, tag, value):
        """A session op (see the module's docstring): its STEPs."""
        routed = name == "write_ucs_read"
        write = self.operation(tag, value, routed=routed)
        first = [self.operation("Line1_Speed"), write] if name == "write_msp_read" else [write]
        then = [self.operation(tag, routed=routed)]

        def action(connection):
            def send(operations):
                replies = []
                for reply, _, value in self.harvest(connection, operations, len(operations) > 1):
                    fields = {"service": reply.service, "status": reply.status}
                    if reply.status == 0 and isinstance(value, list):
                        fields["values"] = value
                    replies.append(fields)
                return replies

            def where():
                return {"session": connection.session, "port": connection.conn.getsockname()[1]}

            return steps([lambda: send(first), lambda: send(then)], where)

        return self.on_connection(name == "write_connected_read", action, ended_early)

    def list_identity(self, udp=False):
        if udp:
            connection = self.client.connector(
                host=self.host, port=self.port, timeout=self.timeout, udp=True
            )
        else:
            connection = self.connect()
        sock = connection.conn
        try:
            with connection:
                connection.list_identity(timeout=self.timeout)
                reply, _ = self.client.await_response(connection, timeout=self.timeout)
            if reply is None:
                raise Timeout("no ListIdentity reply")
            if not reply.get("enip.CIP.list_identity.CPF.item"):
                raise Closed(f"not a ListIdentity reply: {reply}")
            return []
        finally:
            if udp:
                sock.close()
            else:
                abort(sock)

    def run(self, name, tag, value):
        if name in ("list_identity", "list_identity_udp"):
            return self.list_identity(udp=name == "list_identity_udp")
        if name in ("read", "read_ucs", "read_connected"):
            operation = self.operation(tag, routed=name == "read_ucs")
            return self.transact([operation], connected=name == "read_connected")[0]
        if name == "multi_read":
            operations = [self.operation(t) for t in tag]
            return self.transact(operations, multiple=True)
        if name in ("write", "write_ucs", "write_connected"):
            operation = self.operation(tag, value, routed=name == "write_ucs")
            self.transact([operation], connected=name == "write_connected")
            return []
        if name == "write_msp":
            operations = [self.operation("Line1_Speed"), self.operation(tag, value)]
            self.transact(operations, multiple=True)
            return []
        if name in SESSIONS:
            return self.write_then_read(name, tag, value)
        raise ValueError(f"cpppo: `{name}` is not supported")


# --- pycomm3 -----------------------------------------------------------------------------


class Pycomm3:
    """pycomm3: LogixDriver for its connected requests (tags defined by hand: it cannot read
    cpppo's tag list), its generic unconnected packet with a symbolic path for the rest."""

    def __init__(self, host, port, timeout):
        import pycomm3
        from pycomm3.cip_driver import parse_cip_route
        from pycomm3.cip import PADDED_EPATH
        from pycomm3.cip_driver import with_forward_open
        from pycomm3.packets import GenericConnectedRequestPacket, GenericUnconnectedRequestPacket
        from pycomm3.packets import MultiServiceRequestPacket, ReadTagRequestPacket
        from pycomm3.packets import WriteTagRequestPacket
        from pycomm3.packets.ethernetip import SendRRDataRequestPacket, SendUnitDataRequestPacket
        from pycomm3.packets.util import tag_request_path, wrap_unconnected_send

        self.pycomm3 = pycomm3
        self.host, self.port, self.timeout = host, port, timeout
        self.route_path = PADDED_EPATH.encode(
            parse_cip_route("1/0"), length=True, pad_length=True
        )

        class SymbolicRequest(GenericUnconnectedRequestPacket):
            """A tag service in SendRRData with a symbolic request path, plain or inside an
            Unconnected Send."""

            def __init__(self, tag, **kwargs):
                self.tag = tag
                super().__init__(class_code=0, instance=0, **kwargs)

            def _setup_message(self):
                SendRRDataRequestPacket._setup_message(self)
                message = b"".join(
                    (self.service, tag_request_path(self.tag, {}, False), self.request_data)
                )
                if self.unconnected_send:
                    message = wrap_unconnected_send(message, self.route_path)
                self._msg.append(message)

        class SymbolicConnectedRequest(GenericConnectedRequestPacket):
            """A tag service in SendUnitData with a symbolic request path."""

            def __init__(self, tag, **kwargs):
                self.tag = tag
                super().__init__(class_code=0, instance=0, **kwargs)

            def _setup_message(self):
                SendUnitDataRequestPacket._setup_message(self)
                self._msg += [
                    self.service,
                    tag_request_path(self.tag, {}, False),
                    self.request_data,
                ]

        self.SymbolicRequest = SymbolicRequest
        self.SymbolicConnectedRequest = SymbolicConnectedRequest
        self.MultiServiceRequestPacket = MultiServiceRequestPacket
        self.ReadTagRequestPacket = ReadTagRequestPacket
        self.WriteTagRequestPacket = WriteTagRequestPacket
        self.with_forward_open = with_forward_open

    def path(self):
        return f"{self.host}:{self.port}" if self.port != 44818 else self.host

    def driver(self, logix):
        if logix:
            driver = self.pycomm3.LogixDriver(self.path(), init_tags=False)
            # What the tag list upload would have found.
            for name, (kind, count, _) in TAGS.items():
                driver._tags[name] = {
                    "tag_name": name,
                    "tag_type": "atomic",
                    "data_type": kind,
                    "data_type_name": kind,
                    "dim": 1 if count > 1 else 0,
                    "dimensions": [count if count > 1 else 0, 0, 0],
                    "external_access": "Read/Write",
                    "type_class": (
                        self.pycomm3.Array(length_=count, element_type_=self.pycomm3.DataTypes.get(kind))
                        if count > 1
                        else self.pycomm3.DataTypes.get(kind)
                    ),
                }
        else:
            driver = self.pycomm3.CIPDriver(self.path())
        driver.socket_timeout = self.timeout
        return driver

    def session(self, logix, action, broken=lambda result: False):
        """Runs `action(driver)` on a new session; closes it cleanly if that returns a result
        that is not `broken`, aborts its connection otherwise."""
        driver = self.driver(logix)
        clean = False
        try:
            if not driver.open():
                raise Closed("RegisterSession failed")
            if logix:
                # Symbolic paths: the hand-made tags have no instance ids.
                driver._cfg["use_instance_ids"] = False
            result = action(driver)
            clean = not broken(result)
            return result
        finally:
            if clean:
                driver.close()
            elif driver._sock is not None:
                abort(driver._sock.sock)

    def unconnected(self, driver, service, tag, data, wrapped):
        request = self.SymbolicRequest(
            tag,
            service=service,
            request_data=data,
            route_path=self.route_path if wrapped else b"",
            unconnected_send=wrapped,
        )
        response = driver.send(request)
        if not response:
            status = getattr(response, "service_status", None)
            if status:
                raise Status(status)
            raise Closed(f"no valid reply: {response.error}")
        return response.data

    def sent(self, driver, request, at):
        """Sends a request and returns its response packet; `at`: where the CIP reply starts
        in the message (after the encapsulation header and the items' headers)."""
        response = driver.send(request)
        if response.raw is None:
            raise Closed(f"no reply: {response.error}")
        if response.command_status != 0:
            raise Closed(f"encapsulation status {response.command_status}")
        if len(response.raw) < at + 4:
            raise Closed(f"a reply of {len(response.raw)} bytes")
        return response

    def reply(self, response, service_at):
        """REPLY fields of a response packet whose CIP reply's service code is at `service_at`
        of its raw message (pycomm3 decodes the general status and finds the data)."""
        fields = {"service": response.raw[service_at], "status": response.service_status}
        if fields["service"] == 0xCC and response.service_status == 0:
            fields["values"] = values(response.data)
        return fields

    def write_then_read(self, name, tag, value):
        """A session op (see the module's docstring): its STEPs. Single requests go as in the
        other ops (symbolic paths); the Multiple Service Packet is LogixDriver's packet of a
        ReadTagRequestPacket and a WriteTagRequestPacket, on its connection."""
        kind, _, _ = tag_type(tag)
        code, fmt = CIP_TYPES[kind]
        write_data = struct.pack("<HH", code, 1) + struct.pack(fmt, value)
        read_data = struct.pack("<H", element_count(tag))
        connected = name in ("write_connected_read", "write_msp_read")
        # The CIP reply starts after the header (24), the interface handle and timeout (6),
        # the item count (2), the address item (4, + 4 for a connection id), the data item's
        # header (4) and, connected, the sequence count (2).
        at = 46 if connected else 40

        def action(driver):
            if connected:
                self.with_forward_open(lambda _: None)(driver)

            def single(service, data):
                if connected:
                    request = self.SymbolicConnectedRequest(
                        tag, sequence=driver._sequence, service=service, request_data=data
                    )
                else:
                    request = self.SymbolicRequest(
                        tag,
                        service=service,
                        request_data=data,
                        route_path=self.route_path if name == "write_ucs_read" else b"",
                        unconnected_send=name == "write_ucs_read",
                    )
                return [self.reply(self.sent(driver, request, at), at)]

            def multiple():
                read = self.ReadTagRequestPacket(
                    driver._sequence, "Line1_Speed", 1, driver._tags["Line1_Speed"], 0, False
                )
                write = self.WriteTagRequestPacket(
                    driver._sequence, tag, 1, driver._tags[base_name(tag)], 1, False,
                    struct.pack(fmt, value),
                )
                for request in (read, write):
                    request.build_message()
                packet = self.MultiServiceRequestPacket(driver._sequence, [read, write])
                response = self.sent(driver, packet, at)
                if response.raw[at] != 0x8A or response.service_status not in (0, 0x1E):
                    return [{"service": response.raw[at], "status": response.service_status}]
                # pycomm3 pads each entry's reply so that its service code is where a
                # connected reply's is.
                return [self.reply(entry, 46) for entry in response.responses]

            def where():
                return {"session": driver._session, "port": driver._sock.sock.getsockname()[1]}

            first = multiple if name == "write_msp_read" else lambda: single(0x4D, write_data)
            return steps([first, lambda: single(0x4C, read_data)], where)

        return self.session(connected, action, ended_early)

    def check(self, tags):
        for tag in tags if isinstance(tags, list) else [tags]:
            if tag.error:
                if "failed to receive" in tag.error or "broken" in tag.error:
                    raise Timeout(tag.error)
                raise Closed(tag.error)

    def run(self, name, tag, value):
        if name == "list_identity":

            def action(driver):
                identity = driver._list_identity()
                if not identity:
                    raise Closed("no ListIdentity reply")
                return []

            return self.session(False, action)
        if name in ("read", "read_ucs"):
            count = element_count(tag)

            def action(driver):
                data = self.unconnected(
                    driver, 0x4C, tag, struct.pack("<H", count), name == "read_ucs"
                )
                return values(data)

            return self.session(False, action)
        if name in ("write", "write_ucs"):
            kind, _, _ = tag_type(tag)
            code, fmt = CIP_TYPES[kind]
            data = struct.pack("<HH", code, 1) + struct.pack(fmt, value)

            def action(driver):
                self.unconnected(driver, 0x4D, tag, data, name == "write_ucs")
                return []

            return self.session(False, action)
        if name in ("read_connected", "multi_read"):
            tags = tag if name == "multi_read" else [tag]
            requested = [t if "[" in t or element_count(t) == 1 else f"{t}{{{element_count(t)}}}" for t in tags]

            def action(driver):
                results = driver.read(*requested)
                results = results if isinstance(results, list) else [results]
                self.check(results)
                values = [r.value if isinstance(r.value, list) else [r.value] for r in results]
                return values if name == "multi_read" else values[0]

            return self.session(True, action)
        if name == "write_connected":
            # LogixDriver.write of one tag sends its Write Tag twice in one message (pycomm3
            # 1.2.16 builds the packet twice), which the server refuses: send the request
            # LogixDriver would have sent, once, on its connection.
            kind, _, _ = tag_type(tag)
            code, fmt = CIP_TYPES[kind]
            data = struct.pack("<HH", code, 1) + struct.pack(fmt, value)

            def action(driver):
                self.with_forward_open(lambda _: None)(driver)
                request = self.SymbolicConnectedRequest(
                    tag, sequence=driver._sequence, service=0x4D, request_data=data
                )
                response = driver.send(request)
                if not response:
                    status = getattr(response, "service_status", None)
                    if status:
                        raise Status(status)
                    raise Closed(f"no valid reply: {response.error}")
                return []

            return self.session(True, action)
        if name == "write_msp":
            # LogixDriver.write of two tags: one Multiple Service Packet of two Write Tags.
            writes = [(tag, value), ("Line1_Count", value)]

            def action(driver):
                self.check(driver.write(*writes))
                return []

            return self.session(True, action)
        if name in SESSIONS:
            return self.write_then_read(name, tag, value)
        raise ValueError(f"pycomm3: `{name}` is not supported")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=["cpppo", "pycomm3"], required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=44818)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("ops", nargs="+", type=parse_op)
    args = parser.parse_args()
    # Both libraries log failures themselves; they go to stderr, results to stdout.
    logging.basicConfig(stream=sys.stderr, level=logging.CRITICAL)
    socket.setdefaulttimeout(args.timeout)

    impl = (Cpppo if args.client == "cpppo" else Pycomm3)(args.host, args.port, args.timeout)
    for name, tag, value in args.ops:
        line = {"op": name}
        if tag is not None:
            line["tag"] = tag
        try:
            result = impl.run(name, tag, value)
            if name in SESSIONS:
                fields = {"result": "session", "steps": result}
            else:
                fields = {"result": "ok", "values": result}
        except Exception as error:  # every failure is a result line
            fields = classify(error)
        print(json.dumps({**line, **fields}), flush=True)


if __name__ == "__main__":
    main()
