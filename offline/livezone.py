"""A real zone for the offline preview: Cloudflare's BIND export or its records-API JSON.

`make preview ARGS="--live-zone example.org.txt"` feeds the zone's real records to the fake
cloud in place of its made-up ones, so the policy pack judges the stack against the live
zone (its size, its primary MX and that MX's preference, foreign MX records) with no
credentials. Export with the dashboard (DNS > Records > Export) or with
`curl -H "Authorization: Bearer $TOKEN" https://api.cloudflare.com/client/v4/zones/<id>/dns_records?per_page=5000`.
"""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.tokenizer
import dns.zonefile


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


def _from_bind(text: str, path: Path) -> list[dict]:
    """A master file read by dnspython's zone-file reader (RFC 1035 section 5: $ORIGIN, $TTL,
    parentheses across lines, comments, quoted strings), one record per rdata, as the
    records API lists them: no SOA, and no NS of Cloudflare's own name servers. Read as
    records, not as a zone: Cloudflare keeps a flattened CNAME at the apex beside other data,
    which a zone refuses."""
    try:
        origin = _first_origin(text, path)
        manager = _Records(origin, False, dns.rdataclass.IN)
        with manager.writer(True) as txn:
            dns.zonefile.Reader(dns.tokenizer.Tokenizer(text, str(path)), dns.rdataclass.IN, txn,
                                allow_directives={"$ORIGIN", "$TTL"}, default_ttl=1).read()
        rrsets = [(rrset.name, rrset) for rrset in manager.rrsets]
    except (dns.exception.DNSException, ValueError) as exc:
        why = "an SOA record needs the $ORIGIN of its zone" if "non-origin SOA" in str(exc) else exc
        raise LiveZoneError(f"--live-zone {path}: not a zone file dnspython can read ({why})") from None
    records = []
    for owner, rdataset in rrsets:
        kind, name = dns.rdatatype.to_text(rdataset.rdtype), _plain(owner)
        for rdata in rdataset:
            if kind == "SOA" or (kind == "NS" and _plain(rdata.target).endswith(".ns.cloudflare.com")):
                continue  # the export adds them; the records API (and the record quota) has neither
            if kind == "MX":
                records.append({"type": kind, "name": name, "content": _plain(rdata.exchange),
                                "priority": float(rdata.preference)})
            elif kind in ("A", "AAAA"):
                records.append({"type": kind, "name": name, "content": str(ipaddress.ip_address(rdata.address))})
            elif kind in ("CNAME", "NS", "PTR"):
                records.append({"type": kind, "name": name, "content": _plain(rdata.target)})
            else:
                records.append({"type": kind, "name": name, "content": rdata.to_text(relativize=False)})
    if not records:
        raise LiveZoneError(f"--live-zone {path}: no records found")
    return records


class _Transaction(dns.zonefile.RRsetsReaderTransaction):
    def check_put_rdataset(self, check) -> None:
        """The one check zonefile.Reader registers is CNAME-and-other-data (dnspython 2.9):
        Cloudflare flattens a CNAME at the apex and keeps it beside the zone's MX and TXT,
        and its export writes it as a CNAME there. Every record is still read."""


class _Records(dns.zonefile.RRSetsReaderManager):
    def writer(self, replacement=False):
        return _Transaction(self, True, False)


def _first_origin(text: str, path: Path) -> dns.name.Name:
    """The zone the export names with its first $ORIGIN; the root when it names none."""
    tok = dns.tokenizer.Tokenizer(text, str(path))
    while not (token := tok.get()).is_eof():
        if token.is_identifier() and token.value.upper() == "$ORIGIN":
            return tok.get_name()
    return dns.name.root


def _plain(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


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

