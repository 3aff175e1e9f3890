#!/usr/bin/env python3
"""Derives the compact search-parameter table Ward embeds from the official R4 definitions.

Usage (from the repository root):
    python3 crates/ward-fhir/fhir-r4/trim_search_parameters.py \
        ../shared/fhir-r4/search-parameters.json > crates/ward-fhir/fhir-r4/search-parameters.trimmed.json

For every SearchParameter of type string, token, reference, date, quantity, uri or number
(composite and special are left out) and every base resource type, one row:
    [base, code, type, expression-for-that-base, [target types], id]
([] targets: any type; the source lists all 146 types for such references.)
A shared expression (`Patient.name | Practitioner.name`) is split at its top-level `|` and only the
parts rooted at the base (or at Resource/DomainResource) are kept. Output is sorted, one row per
line, so regenerating gives a reviewable diff.
"""
import json
import sys

KINDS = {"string", "token", "reference", "date", "quantity", "uri", "number"}


def split_top(expr):
    parts, depth, cur, i = [], 0, "", 0
    while i < len(expr):
        c = expr[i]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if c == "|" and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    parts.append(cur.strip())
    return parts


def root(part):
    p = part.lstrip("(")
    name = ""
    for c in p:
        if c.isalnum():
            name += c
        else:
            break
    return name


def main():
    bundle = json.load(open(sys.argv[1]))
    rows = []
    for e in bundle["entry"]:
        r = e["resource"]
        if r["type"] not in KINDS or not r.get("expression"):
            continue
        parts = split_top(r["expression"])
        for base in r["base"]:
            mine = [p for p in parts if root(p) in (base, "Resource", "DomainResource")]
            if not mine:
                continue
            targets = sorted(set(r.get("target", [])))
            if len(targets) > 100:  # "any resource type" is spelled out in the source
                targets = []
            row = [base, r["code"], r["type"], " | ".join(mine), targets, r["id"]]
            if row not in rows:
                rows.append(row)
    rows.sort()
    out = sys.stdout
    out.write("[\n")
    for i, row in enumerate(rows):
        out.write(json.dumps(row, ensure_ascii=False))
        out.write(",\n" if i + 1 < len(rows) else "\n")
    out.write("]\n")


if __name__ == "__main__":
    main()
