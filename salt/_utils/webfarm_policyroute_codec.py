"""Netlink messages for policyroute, packed and parsed as bytes. Pure functions, no sockets.

``salt/_modules/policyroute.py`` sends what these build and hands what it receives back to
them. Thousands of rules go out per apply, so rules and routes are packed directly (not
through pyroute2's message classes, ~20x slower), and rule dumps are read for the four fields
webfarm needs instead of decoding every attribute. tests/unit/test_policyroute_codec.py
checks the route encoding byte for byte against pyroute2's.
"""

import errno
import ipaddress
import os
import struct

import webfarm_policyroute as pr

# linux/netlink.h, linux/rtnetlink.h, linux/fib_rules.h
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_ACK_TLVS = 0x200  # on an NLMSG_ERROR: extended ACK attributes follow
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSGERR_ATTR_MSG = 1
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
FRA_SRC, FRA_PRIORITY, FRA_TABLE, FRA_PROTOCOL = 2, 6, 15, 21
FR_ACT_TO_TBL = 1
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
RT_TABLE_COMPAT = 252
HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid


class DeviceGone(LookupError):
    """A route's device is not among the host's links (any more)."""


def _attr(kind, payload):
    """One netlink attribute, padded to 4 bytes."""
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _packed(address):
    if address.count(".") == 3 and ":" not in address:
        return bytes(int(part) for part in address.split("."))
    return ipaddress.ip_address(address).packed


def _message(kind, flags, seq, body):
    return HEADER.pack(HEADER.size + len(body), kind, flags, seq, 0) + body


def dump_request(kind, family, seq):
    """A dump request of ``kind`` (e.g. RTM_GETRULE) for one address family."""
    return _message(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, struct.pack("=B11x", family))


def messages(data):
    """``(offset, length, type, flags, seq)`` of each netlink message in one datagram."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, flags, seq, _pid = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            return
        yield offset, length, kind, flags, seq
        offset += (length + 3) & ~3


def error_code(data, offset):
    """The (negative errno, or 0) code of the NLMSG_ERROR at ``offset``."""
    (code,) = struct.unpack_from("=i", data, offset + HEADER.size)
    return code


def error_text(code, data, offset, length, flags):
    """``"EEXIST: File exists (<kernel's extended ACK message>)"`` for a positive errno."""
    text = f"{errno.errorcode.get(code, code)}: {os.strerror(code)}"
    if flags & NLM_F_ACK_TLVS:
        pos, end = offset + 36, offset + length
        while pos + 4 <= end:
            tlv_len, tlv_type = struct.unpack_from("=HH", data, pos)
            if tlv_len < 4:
                break
            if tlv_type == NLMSGERR_ATTR_MSG:
                detail = data[pos + 4 : pos + tlv_len].split(b"\0", 1)[0].decode(errors="replace")
                text += f" ({detail})"
            pos += (tlv_len + 3) & ~3
    return text


def owned_rule(data, offset, length):
    """``[Rule]`` (or ``[]`` for a rule webfarm does not own) from one RTM_NEWRULE message:
    fib_rule_hdr, then attributes."""
    family, _dst_len, src_len, _tos, table, _r1, _r2, _action = struct.unpack_from(
        "=8B", data, offset + HEADER.size
    )
    src, priority, protocol = None, 0, 0
    pos, end = offset + 28, offset + length
    while pos + 4 <= end:
        attr_len, attr_type = struct.unpack_from("=HH", data, pos)
        if attr_len < 4:
            break
        attr_type &= 0x3FFF
        value = pos + 4
        if attr_type == FRA_SRC:
            raw = bytes(data[value : pos + attr_len])
            src = ".".join(map(str, raw)) if len(raw) == 4 else str(ipaddress.ip_address(raw))
        elif attr_type == FRA_PRIORITY:
            (priority,) = struct.unpack_from("=I", data, value)
        elif attr_type == FRA_TABLE:
            (table,) = struct.unpack_from("=I", data, value)
        elif attr_type == FRA_PROTOCOL:
            protocol = data[value]
        pos += (attr_len + 3) & ~3
    if not pr.owned_rule(protocol, priority):
        return []
    src = src or ("0.0.0.0" if family == pr.AF_INET else "::")
    return [pr.Rule(family=family, src=f"{src}/{src_len}", table=table, priority=priority)]


def _change_flags(action):
    flags = NLM_F_REQUEST | NLM_F_ACK
    if action == "add":
        flags |= NLM_F_CREATE | NLM_F_EXCL
    elif action == "replace":
        flags |= NLM_F_CREATE | NLM_F_REPLACE
    return flags


def encode_rule(op, seq):
    """RTM_NEWRULE (add) or RTM_DELRULE (delete) for ``op.item`` (a Rule)."""
    item = op.item
    address, length = item.src.split("/")
    attrs = (
        _attr(FRA_TABLE, struct.pack("=I", item.table))
        + _attr(FRA_PRIORITY, struct.pack("=I", item.priority))
        + _attr(FRA_PROTOCOL, bytes([pr.PROTO]))
    )
    if int(length):
        attrs += _attr(FRA_SRC, _packed(address))
    table = item.table if item.table < 256 else 0
    body = struct.pack("=8BI", item.family, 0, int(length), 0, table, 0, 0, FR_ACT_TO_TBL, 0)
    kind = RTM_NEWRULE if op.action == "add" else RTM_DELRULE
    flags = _change_flags("add" if op.action == "add" else "delete")
    return _message(kind, flags, seq, body + attrs)


def encode_route(op, index, seq):
    """RTM_NEWROUTE (add, replace) or RTM_DELROUTE (delete) for ``op.item`` (a Route);
    ``index`` maps device names to interface indexes."""
    item = op.item
    if item.dev not in index:
        raise DeviceGone(item.dev)
    address, length = item.dst.split("/")
    if op.action == "delete":
        scope = RT_SCOPE_NOWHERE
    else:
        scope = RT_SCOPE_UNIVERSE if item.gateway else RT_SCOPE_LINK
    table = item.table if item.table < 256 else RT_TABLE_COMPAT
    body = struct.pack(
        "=8BI", item.family, int(length), 0, 0, table, pr.PROTO, scope, RTN_UNICAST, 0
    )
    body += (
        _attr(RTA_TABLE, struct.pack("=I", item.table))
        + _attr(RTA_OIF, struct.pack("=I", index[item.dev]))
        + _attr(RTA_PRIORITY, struct.pack("=I", item.metric))
    )
    if int(length):
        body += _attr(RTA_DST, _packed(address))
    if item.gateway:
        body += _attr(RTA_GATEWAY, _packed(item.gateway))
    kind = RTM_DELROUTE if op.action == "delete" else RTM_NEWROUTE
    return _message(kind, _change_flags(op.action), seq, body)


def encode(op, index, seq):
    """The netlink message that carries out ``op`` (a Route or Rule change)."""
    if isinstance(op.item, pr.Rule):
        return encode_rule(op, seq)
    return encode_route(op, index, seq)
