"""The tags of the EtherNet/IP test server (`enip_server.py`), shared with the client
(`enip_client.py`): name, CIP type, element count, initial values."""

TAGS = {
    "Line1_Speed": ("INT", 1, [1500]),
    "Line1_Count": ("DINT", 1, [70000]),
    "Recipe_Setpoint": ("DINT", 1, [250000]),
    "Secret": ("INT", 4, [11, 22, 33, 44]),
}


def declaration(name):
    """The tag as cpppo's simulator takes it on its command line, e.g. `Secret=INT[4]`."""
    kind, count, _ = TAGS[name]
    return f"{name}={kind}[{count}]" if count > 1 else f"{name}={kind}"
