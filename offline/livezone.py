"""A real zone for the offline preview: Cloudflare's BIND export or its records-API JSON.

`make preview ARGS="--live-zone example.org.txt"` feeds the zone's real records to the fake
cloud in place of its made-up ones, so the policy pack judges the stack against the live
zone (its size, its primary MX and that MX's preference, foreign MX records) with no
credentials. Export with the dashboard (DNS > Records > Export) or with
`curl -H "Authorization: Bearer $TOKEN" https://api.cloudflare.com/client/v4/zones/<id>/dns_records?per_page=5000`.
"""
from __future__ import annotations

import json
from pathlib import Path

RECORD_TYPES = {"A", "AAAA", "CAA", "CERT", "CNAME", "DNSKEY", "DS", "HTTPS", "LOC", "MX", "NAPTR", "NS", "OPENPGPKEY",
                "PTR", "SMIMEA", "SOA", "SRV", "SSHFP", "SVCB", "TLSA", "TXT", "URI"}
CLASSES = {"IN", "CH", "HS"}


class LiveZoneError(ValueError):
    pass


def load(path: Path) -> list[dict]:
    """The zone's records as {type, name, content[, priority]}, names fully qualified."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LiveZoneError(f"--live-zone {path}: cannot read it ({exc})") from None
    if text.lstrip().startswith(("{", "[")):
        return _from_json(text, path)
    return _from_bind(text, path)


def _from_json(text: str, path: Path) -> list[dict]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise LiveZoneError(f"--live-zone {path}: not JSON ({exc})") from None
    rows = doc.get("result") if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise LiveZoneError(f"--live-zone {path}: a records-API answer has a 'result' list of records")
    records = []
    for i, row in enumerate(rows):
        if not (isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("type", "name", "content"))):
            raise LiveZoneError(f"--live-zone {path}: record {i} lacks a type, name or content string")
        record = {"type": row["type"].upper(), "name": row["name"].lower().rstrip("."), "content": row["content"]}
        if record["type"] == "MX":
            if not isinstance(row.get("priority"), (int, float)):
                raise LiveZoneError(f"--live-zone {path}: MX record {row['name']} has no priority")
            record["priority"] = float(row["priority"])
            record["content"] = record["content"].lower().rstrip(".")
        records.append(record)
    return records


def _tokens(line: str) -> list[str]:
    """Split a zone-file line into fields: quoted strings stay whole; ';' outside quotes
    starts a comment (RFC 1035 section 5.1)."""
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if c in " \t":
            i += 1
        elif c == ";":
            break
        elif c == '"':
            end = i + 1
            while end < len(line) and line[end] != '"':
                end += 2 if line[end] == "\\" else 1
            out.append(line[i:end + 1])
            i = end + 1
        else:
            end = i
            while end < len(line) and line[end] not in " \t;":
                end += 1
            out.append(line[i:end])
            i = end
    return out


def _from_bind(text: str, path: Path) -> list[dict]:
    origin, last_name, records = "", "", []
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = _tokens(raw)  # comments dropped: Cloudflare's header and record comments hold parentheses
        if any(c in f for f in fields if not f.startswith('"') for c in "()"):
            raise LiveZoneError(f"--live-zone {path}: line {number}: multi-line records (parentheses) are not "
                                "modelled; Cloudflare's export writes one record a line")
        if not fields:
            continue
        if fields[0].upper() == "$ORIGIN":
            origin = fields[1].lower().rstrip(".")
            continue
        if fields[0].startswith("$"):
            continue  # $TTL and the like do not change names or content
        name = last_name if raw[:1] in " \t" else _qualify(fields.pop(0), origin)
        while fields and (fields[0].isdigit() or fields[0].upper() in CLASSES):
            fields.pop(0)
        if not fields or fields[0].upper() not in RECORD_TYPES:
            raise LiveZoneError(f"--live-zone {path}: line {number}: no record type this reader knows ({raw.strip()!r})")
        kind, rdata = fields[0].upper(), fields[1:]
        last_name = name
        if kind == "SOA" or (kind == "NS" and rdata and rdata[0].lower().rstrip(".").endswith(".ns.cloudflare.com")):
            continue  # the export adds them; the records API (and the record quota) has neither
        if not rdata:
            raise LiveZoneError(f"--live-zone {path}: line {number}: {kind} record without data")
        if kind == "MX":
            if len(rdata) != 2 or not rdata[0].isdigit():
                raise LiveZoneError(f"--live-zone {path}: line {number}: MX data is 'preference host'")
            records.append({"type": kind, "name": name, "content": _qualify(rdata[1], origin),
                            "priority": float(rdata[0])})
        elif kind in ("CNAME", "NS", "PTR"):
            records.append({"type": kind, "name": name, "content": _qualify(rdata[0], origin)})
        else:
            records.append({"type": kind, "name": name, "content": " ".join(rdata)})
    if not records:
        raise LiveZoneError(f"--live-zone {path}: no records found")
    return records


def _qualify(name: str, origin: str) -> str:
    name = name.lower()
    if name == "@":
        return origin
    if name.endswith("."):
        return name.rstrip(".")
    return f"{name}.{origin}" if origin else name


def for_domains(records: list[dict], domains: list[str]) -> dict[str, list[dict]]:
    """Assign the file's records to the protected domain whose zone they belong to."""
    if not records:
        return {}
    by_domain = {d: [r for r in records if r["name"] == d or r["name"].endswith("." + d)] for d in domains}
    owner = max(by_domain, key=lambda d: len(by_domain[d]))
    if not by_domain[owner]:
        raise LiveZoneError(f"the live zone's records lie in none of the protected domains {domains}")
    stray = [r["name"] for r in records if r not in by_domain[owner]]
    if stray:
        raise LiveZoneError(f"the live zone mixes names outside {owner}: {', '.join(sorted(set(stray))[:5])}")
    return {owner: by_domain[owner]}

