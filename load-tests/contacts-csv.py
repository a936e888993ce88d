#!/usr/bin/env python3
"""Writes a contacts CSV for POST /api/contacts/import: N distinct valid Colombian mobiles
(prefixes 300-305, 310-323, 350, 351; every tenth as "+57 3xx xxx xxxx"), quoted names with
a comma, and a few tags. Usage: load-tests/contacts-csv.py 1000000 > contacts-1m.csv"""
import sys

PREFIXES = [*range(300, 306), *range(310, 324), 350, 351]
TAGS = ["vip;bogota", "news", "", "medellin;news", "bogota"]

def main(rows: int) -> None:
    out = sys.stdout
    out.write("phone,name,tags\n")
    for i in range(rows):
        prefix, serial = PREFIXES[i % len(PREFIXES)], i // len(PREFIXES)
        if i % 10:
            phone = f"{prefix}{serial:07d}"
        else:
            phone = f'"+57 {prefix} {serial // 10000:03d} {serial % 10000:04d}"'
        out.write(f'{phone},"Contact {i}, Test","{TAGS[i % len(TAGS)]}"\n')

if __name__ == "__main__":
    main(int(sys.argv[1]))
