"""make preview ARGS="--live-zone FILE": a real zone (Cloudflare's BIND export or its
records-API JSON) replaces the fake one, and the pack judges the stack against it."""
import ipaddress
import json

import pytest
from hypothesis import assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from offline import livezone, preview
from tests.helpers import DATA, EXAMPLE

BIND = DATA / "zone-viktorbarzin.me.txt"  # the primary published at preference 10
SHAPES = DATA / "zone-cloudflare-shapes.txt"  # multi-line SOA, $TTL, split TXT, cf_tags, HTTPS, SRV, CAA


def api_json(tmp_path, primary_priority):
    rows = [{"id": "a1", "type": "MX", "name": "viktorbarzin.me", "content": "mail.viktorbarzin.me",
             "priority": primary_priority, "ttl": 1},
            {"id": "a2", "type": "A", "name": "mail.viktorbarzin.me", "content": "198.51.100.7", "ttl": 1},
            {"id": "a3", "type": "TXT", "name": "viktorbarzin.me", "content": "\"v=spf1 mx -all\"", "ttl": 1}]
    path = tmp_path / "zone.json"
    path.write_text(json.dumps({"success": True, "result": rows, "result_info": {"count": 3}}))
    return path


def run(tmp_path, capsys, *zone_files, primary_pref=None):
    stack = tmp_path / "Pulumi.live.yaml"
    text = EXAMPLE.read_text()
    if primary_pref is not None:
        text = text.replace("backup-mx:primaryMxPreference: 1", f"backup-mx:primaryMxPreference: {primary_pref}")
    stack.write_text(text)
    args = ["--config", str(stack), "--out", str(tmp_path / "build")]
    for f in zone_files:
        args += ["--live-zone", str(f)]
    code = preview.main(args)
    return code, capsys.readouterr()


def test_the_bind_export_is_read_as_cloudflare_writes_it():
    records = livezone.load(BIND)
    assert {"type": "MX", "name": "viktorbarzin.me", "content": "mail.viktorbarzin.me", "priority": 10.0} in records
    assert {"type": "A", "name": "www.viktorbarzin.me", "content": "198.51.100.8"} in records  # relative name
    assert any(r["type"] == "TXT" and "p=quarantine; rua=" in r["content"] for r in records)  # ';' inside quotes
    assert len(records) == 6 and not any(r["type"] == "SOA" for r in records)  # the API lists no SOA


def test_every_record_shape_of_a_cloudflare_export_is_read_and_counted():
    records = livezone.load(SHAPES)
    kinds = sorted(r["type"] for r in records)
    assert kinds == ["A", "A", "A", "AAAA", "CAA", "CNAME", "HTTPS", "MX", "NS", "SRV", "TXT", "TXT", "TXT", "TXT"]
    assert {"type": "NS", "name": "lab.viktorbarzin.me", "content": "ns1.lab.viktorbarzin.me"} in records  # a delegation
    assert {"type": "AAAA", "name": "www.viktorbarzin.me", "content": "2001:db8::8"} in records  # as the API writes it
    dkim = next(r["content"] for r in records if r["name"] == "mail._domainkey.viktorbarzin.me")
    assert dkim.count('" "') == 1 and dkim.endswith('IDAQAB"')  # one record, two character-strings
    assert '"a1b2c3 (verification; do not remove)"' in [r["content"] for r in records]


def test_a_multi_line_export_previews_with_its_real_size(tmp_path, capsys):
    code, out = run(tmp_path, capsys, SHAPES, primary_pref=10)
    assert code == 0, out.out
    assert "zone viktorbarzin.me" in out.out and "14 live + " in out.out


def test_a_live_primary_at_another_preference_is_reported(tmp_path, capsys):
    code, out = run(tmp_path, capsys, BIND)
    assert code == 1, out.out
    assert "publishes the primary mail.viktorbarzin.me at preference 10, but stack config primaryMxPreference is 1; " \
           "set primaryMxPreference: 10" in out.out
    assert "zone viktorbarzin.me" in out.out and "6 live + " in out.out  # the real zone's size


def test_the_same_stack_stating_the_live_preference_passes(tmp_path, capsys):
    code, out = run(tmp_path, capsys, BIND, primary_pref=10)
    assert code == 0, out.out
    assert "no violations" in out.out


@pytest.mark.parametrize("priority,expected", [(30, 1), (1, 0)])
def test_a_records_api_json_file_decides_too(tmp_path, capsys, priority, expected):
    code, out = run(tmp_path, capsys, api_json(tmp_path, priority))
    assert code == expected, out.out
    if expected:
        assert "relay mx2.viktorbarzin.me at preference 20 (stack config mxPreference) does not come after the " \
               "live primary MX at 30" in out.out


@pytest.mark.parametrize("text,expected", [
    ("viktorbarzin.me. 1 IN MX mail.viktorbarzin.me.\n", "expecting an integer"),
    ("viktorbarzin.me. 1 IN BOGUS x\n", "unknown rdatatype 'BOGUS'"),
    ("example.org. 1 IN A 192.0.2.1\n", "lie in none of the protected domains"),
    ('{"result": [{"type": "MX", "name": "viktorbarzin.me", "content": "mail.viktorbarzin.me"}]}', "has no priority"),
    ("", "no records found"),
    ("viktorbarzin.me. 3600 IN SOA ns1.cloudflare.com. dns.cloudflare.com. (\n 1 2 3 4 5 )\n",
     "an SOA record needs the $ORIGIN of its zone"),
    ("$ORIGIN viktorbarzin.me.\nwww 1 IN A 192.0.2.1 (\n", "unbalanced parentheses"),
    ('$ORIGIN viktorbarzin.me.\n@ 1 IN TXT "unterminated\n', "newline in quoted string"),
    ("$INCLUDE /etc/passwd\n", "'$INCLUDE' is not allowed"),
])
def test_a_bad_zone_file_exits_2_naming_the_problem(tmp_path, capsys, text, expected):
    path = tmp_path / "zone.txt"
    path.write_text(text)
    code, out = run(tmp_path, capsys, path)
    assert code == 2 and expected in out.err and "Traceback" not in out.err, out.err


# --- the property: any zone a real parser reads, written as Cloudflare exports it, counts the same

ZONE = "viktorbarzin.me"
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
OWNER = st.one_of(st.just(ZONE), st.lists(LABEL, min_size=1, max_size=3).map(lambda ls: ".".join(ls) + "." + ZONE))
PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=300)
COMMENT = st.one_of(st.just(""), PRINTABLE.map(lambda t: " ; " + t.replace("\n", " ")),
                    st.sampled_from([" ; cf_tags=cf-proxied:true", " ; home (NAT; port 25) cf_tags=cf-proxied:false"]))


def _quoted(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


RECORD = st.one_of(
    st.tuples(st.just("A"), OWNER, st.ip_addresses(v=4).map(str)),
    st.tuples(st.just("AAAA"), OWNER, st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a)))),
    st.tuples(st.just("CNAME"), OWNER, OWNER),
    st.tuples(st.just("MX"), OWNER, st.tuples(st.integers(0, 65535), OWNER)),
    st.tuples(st.just("TXT"), OWNER, PRINTABLE.map(lambda t: [t[i:i + 255] for i in range(0, len(t), 255)] or [""])),
)


def _export(records, comments, multiline_soa):
    """The zone as Cloudflare's dashboard export writes it: the header, $ORIGIN, the SOA and
    Cloudflare's NS records, then a section per type, absolute names, one record a line."""
    out = [BIND.read_text().split("$ORIGIN")[0], f"$ORIGIN {ZONE}.\n", ";; SOA Record\n"]
    soa = "ada.ns.cloudflare.com. dns.cloudflare.com. 2051234567 10000 2400 604800 3600"
    out.append(f"{ZONE}.\t3600\tIN\tSOA\t" + (soa.replace(" 2051", " (\n\t\t2051").replace(" 3600", " 3600 ) ; (min)")
                                             if multiline_soa else soa) + "\n")
    out.append(f";; NS Records\n{ZONE}.\t86400\tIN\tNS\tada.ns.cloudflare.com.\n{ZONE}.\t86400\tIN\tNS\tbob.ns.cloudflare.com.\n")
    for (kind, owner, data), comment in zip(records, comments, strict=True):
        rdata = {"MX": lambda d: f"{d[0]} {d[1]}.", "CNAME": lambda d: f"{d}.",
                 "TXT": lambda d: " ".join(_quoted(p) for p in d)}.get(kind, lambda d: d)(data)
        out.append(f"{owner}.\t1\tIN\t{kind}\t{rdata}{comment}\n")
    return "".join(out)


def _expected(kind, owner, data):
    if kind == "MX":
        return {"type": "MX", "name": owner, "content": data[1], "priority": float(data[0])}
    if kind == "TXT":
        return {"type": "TXT", "name": owner, "content": " ".join(_quoted(p) for p in data)}
    return {"type": kind, "name": owner, "content": data}


def _canonical(records):
    return sorted(json.dumps(r, sort_keys=True) for r in records)


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(RECORD, COMMENT), min_size=1, max_size=25, unique_by=lambda rc: json.dumps(rc[0])),
       st.booleans())
def test_any_cloudflare_export_counts_every_record_once(tmp_path_factory, pairs, multiline_soa):
    records, comments = [r for r, _ in pairs], [c for _, c in pairs]
    cnames = [owner for kind, owner, _ in records if kind == "CNAME"]
    assume(len(cnames) == len(set(cnames)))  # Cloudflare holds one CNAME a name
    path = tmp_path_factory.mktemp("zone") / "export.txt"
    path.write_text(_export(records, comments, multiline_soa))
    got = livezone.load(path)
    assert _canonical(got) == _canonical([_expected(*r) for r in records])
