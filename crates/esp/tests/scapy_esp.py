#!/usr/bin/env python3
"""Seal and open ESP packets with scapy's SecurityAssociation, for gatekit's interop tests.

Reads jobs from stdin and answers one line per packet on stdout:

    sa <seal|open> <suite> <keyhex> <spi> <tunnel|transport> <sport|-> <dport|-> <esn_high|-> <local> <peer>
    pkt <seq> <hex>

- seal: <hex> is an inner IP packet; it is sealed with sequence number <seq> (low 32 bits)
  and the answer is the whole outer packet ("ok <hex>").
- open: <hex> is a whole outer packet (IP, then UDP for NAT-T, then ESP); the answer is the
  decrypted inner packet ("ok <hex>"), or "err <reason>".

Suites: aes128gcm16, aes256gcm16, chacha20poly1305. Key hex is the key followed by the
4-byte salt (RFC 4106 §8.1, RFC 7634 §4), which is also what scapy takes as crypt_key.
"""
import sys

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation

ALGOS = {
    "aes128gcm16": "AES-GCM",
    "aes256gcm16": "AES-GCM",
    "chacha20poly1305": "CHACHA20-POLY1305",
}


def ip_class(addr):
    return IPv6 if ":" in addr else IP


def make_sa(fields):
    op, suite, key, spi, mode, sport, dport, esn, local, peer = fields
    kw = dict(crypt_algo=ALGOS[suite], crypt_key=bytes.fromhex(key))
    if mode == "tunnel":
        src, dst = (local, peer) if op == "seal" else (peer, local)
        kw["tunnel_header"] = ip_class(src)(src=src, dst=dst)
    if sport != "-":
        kw["nat_t_header"] = UDP(sport=int(sport), dport=int(dport))
    if esn != "-":
        kw["esn_en"] = True
        kw["esn"] = int(esn)
    return op, SecurityAssociation(ESP, spi=int(spi), **kw)


def main():
    op, sa = None, None
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "sa":
            op, sa = make_sa(parts[1:])
            continue
        _, seq, data = parts
        raw = bytes.fromhex(data)
        try:
            if op == "seal":
                pkt = ip_class("::" if raw[0] >> 4 == 6 else "0.0.0.0")(raw)
                out = sa.encrypt(pkt, seq_num=int(seq))
            else:
                pkt = (IPv6 if raw[0] >> 4 == 6 else IP)(raw)
                out = sa.decrypt(pkt)
            print("ok", bytes(out).hex(), flush=True)
        except Exception as e:  # reported to the test, which fails with it
            print("err", type(e).__name__, str(e).replace("\n", " "), flush=True)


if __name__ == "__main__":
    main()
