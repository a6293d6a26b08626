"""The netlink codec: routes byte for byte as pyroute2 encodes them, rules round-tripped."""

import errno
import struct

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.rtmsg import rtmsg

import webfarm_policyroute as pr
import webfarm_policyroute_codec as codec

INDEX = {"eth0": 2, "eth1": 7}


def pyroute2_route(op, index, seq):
    """What the module sent before the codec existed: pyroute2's own rtmsg encoding."""
    item = op.item
    msg = rtmsg()
    address, length = item.dst.split("/")
    msg["family"] = item.family
    msg["dst_len"] = int(length)
    msg["table"] = item.table if item.table < 256 else 252
    msg["proto"] = pr.PROTO
    msg["type"] = 1
    if op.action == "delete":
        msg["scope"] = 255
    else:
        msg["scope"] = 0 if item.gateway else 253
    msg["attrs"] = [
        ("RTA_TABLE", item.table),
        ("RTA_OIF", index[item.dev]),
        ("RTA_PRIORITY", item.metric),
    ]
    if int(length):
        msg["attrs"].append(("RTA_DST", address))
    if item.gateway:
        msg["attrs"].append(("RTA_GATEWAY", item.gateway))
    flags = NLM_F_REQUEST | NLM_F_ACK
    if op.action == "add":
        flags |= NLM_F_CREATE | NLM_F_EXCL
    elif op.action == "replace":
        flags |= NLM_F_CREATE | NLM_F_REPLACE
    msg["header"]["type"] = RTM_DELROUTE if op.action == "delete" else RTM_NEWROUTE
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


ROUTES = [
    pr.Route(pr.AF_INET, 1, "0.0.0.0/0", 0, "85.14.228.254", "eth1"),
    pr.Route(pr.AF_INET, 254, "10.12.0.0/16", 100, None, "eth0"),
    pr.Route(pr.AF_INET, 70000, "192.0.2.0/24", 5, "10.12.0.1", "eth0"),
    pr.Route(pr.AF_INET6, 3, "::/0", 1024, "2001:db8::1", "eth1"),
    pr.Route(pr.AF_INET6, 300, "2001:db8:1::/48", 0, None, "eth0"),
]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.dst}-t{r.table}")
@pytest.mark.parametrize("action", ["add", "replace", "delete"])
def test_route_messages_are_pyroute2s_bytes(route, action):
    op = pr.Op(action, route)
    assert codec.encode(op, INDEX, 4711) == pyroute2_route(op, INDEX, 4711)


def test_a_route_on_a_vanished_device_is_refused():
    op = pr.Op("add", pr.Route(pr.AF_INET, 1, "0.0.0.0/0", 0, "192.0.2.1", "eth9"))
    with pytest.raises(codec.DeviceGone, match="eth9"):
        codec.encode(op, INDEX, 1)


def as_dump_reply(message):
    """The kernel's dump answer has the request's shape; only the type differs."""
    return message[:4] + struct.pack("=H", codec.RTM_NEWRULE) + message[6:]


@pytest.mark.parametrize(
    "rule",
    [
        pr.Rule(pr.AF_INET, "85.14.228.248/32", 1, 1000),
        pr.Rule(pr.AF_INET, "10.0.0.0/8", 70000, 9999),
        pr.Rule(pr.AF_INET6, "2001:db8::5/128", 3, 1500),
        pr.Rule(pr.AF_INET, "0.0.0.0/0", 7, 2000),
    ],
)
def test_rule_messages_decode_back_to_the_rule(rule):
    data = codec.encode(pr.Op("add", rule), INDEX, 9)
    length, kind, flags, seq, _pid = codec.HEADER.unpack_from(data)
    assert (length, kind, seq) == (len(data), codec.RTM_NEWRULE, 9)
    assert flags == codec.NLM_F_REQUEST | codec.NLM_F_ACK | codec.NLM_F_CREATE | codec.NLM_F_EXCL
    assert codec.owned_rule(as_dump_reply(data), 0, length) == [rule]
    delete = codec.encode(pr.Op("delete", rule), INDEX, 10)
    assert codec.HEADER.unpack_from(delete)[1:3] == (codec.RTM_DELRULE, 5)


def test_rules_outside_webfarms_range_or_protocol_are_not_owned():
    data = codec.encode(pr.Op("add", pr.Rule(pr.AF_INET, "192.0.2.1/32", 1, 1000)), INDEX, 1)
    foreign = bytearray(as_dump_reply(data))
    foreign[foreign.rindex(bytes([pr.PROTO]))] = 3  # protocol boot
    assert codec.owned_rule(bytes(foreign), 0, len(foreign)) == []
    low = codec.encode(pr.Op("add", pr.Rule(pr.AF_INET, "192.0.2.1/32", 1, 32766)), INDEX, 1)
    assert codec.owned_rule(as_dump_reply(low), 0, len(low)) == []


def test_messages_walks_a_datagram_and_reads_errors_with_their_extended_ack():
    detail = b"Invalid prefix for given prefix length\0"
    tlv = struct.pack("=HH", 4 + len(detail), codec.NLMSGERR_ATTR_MSG) + detail
    tlv += b"\0" * (-len(tlv) % 4)
    original = codec.HEADER.pack(16, 0, 0, 5, 0)
    error = struct.pack("=i", -errno.EINVAL) + original + tlv
    first = (
        codec.HEADER.pack(16 + len(error), codec.NLMSG_ERROR, codec.NLM_F_ACK_TLVS, 5, 0) + error
    )
    ack = codec.HEADER.pack(36, codec.NLMSG_ERROR, 0, 6, 0) + struct.pack("=i", 0) + original
    data = first + ack
    found = list(codec.messages(data))
    assert [(kind, seq) for _o, _l, kind, _f, seq in found] == [(2, 5), (2, 6)]
    (off1, len1, _k, flags1, _s), (off2, *_rest) = found
    assert codec.error_code(data, off1) == -errno.EINVAL and codec.error_code(data, off2) == 0
    text = codec.error_text(errno.EINVAL, data, off1, len1, flags1)
    assert text == "EINVAL: Invalid argument (Invalid prefix for given prefix length)"


def test_a_dump_request_names_the_family():
    data = codec.dump_request(codec.RTM_GETRULE, pr.AF_INET6, 3)
    assert codec.HEADER.unpack_from(data) == (28, codec.RTM_GETRULE, 0x301, 3, 0)
    assert data[16] == pr.AF_INET6
