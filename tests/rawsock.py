#!/usr/bin/env python3
"""Raw Ethernet frames on a kernel interface (the kernel side of a net_tap port), for the
end-to-end tests: tagged frames without 802.1Q sub-interfaces.

  rawsock.py send IFACE COUNT PPS HEX [HEX...]
      Sends the frames (hex, wire bytes, tag included) in turn until COUNT have gone,
      at PPS frames per second (0: as fast as the socket takes them). Prints how many went.
  rawsock.py recv IFACE SECONDS
      Prints "ready" on stderr once bound, then one line per frame the interface received
      in SECONDS: the wire frame in hex. Frames the host itself sent are skipped.

A packet socket never sees an 802.1Q tag in the data: the kernel takes it out of every frame
it receives (skb_vlan_untag, or the NIC's offload) and keeps it as metadata. It comes with
each frame as PACKET_AUXDATA (tp_vlan_tci, tp_vlan_tpid, TP_STATUS_VLAN_VALID), and this
script puts it back after the source address, so the line is the frame as it was on the wire.
"""

import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata


def send(iface, count, pps, frames):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    start = time.monotonic()
    for i in range(count):
        if pps > 0:
            delay = start + i / pps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                s.send(frames[i % len(frames)])
                break
            except BlockingIOError:
                time.sleep(0.0005)
    print(count)


def recv(iface, seconds):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((iface, 0))
    sys.stderr.write("ready\n")
    sys.stderr.flush()
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data, anc, _flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(AUXDATA.size))
        except socket.timeout:
            break
        if addr[2] == PACKET_OUTGOING:
            continue
        for level, kind, value in anc:
            if level != SOL_PACKET or kind != PACKET_AUXDATA:
                continue
            status, _len, _snap, _mac, _net, tci, tpid = AUXDATA.unpack(value[: AUXDATA.size])
            if status & TP_STATUS_VLAN_VALID:
                if not status & TP_STATUS_VLAN_TPID_VALID:
                    tpid = 0x8100
                data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
        print(data.hex(), flush=True)


def main():
    if len(sys.argv) >= 6 and sys.argv[1] == "send":
        frames = [bytes.fromhex(h) for h in sys.argv[5:]]
        send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), frames)
    elif len(sys.argv) == 4 and sys.argv[1] == "recv":
        recv(sys.argv[2], float(sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
