"""A built-in fake cloud for the Pulumi SDK's mock runtime.

It answers the OCI and Cloudflare invokes the program makes with data shaped like the real
APIs' (wire names, OCIDs, region-specific availability domains, a zone full of records
including the primary's MX), and gives created resources the computed state the providers
would return. In a first preview (`first_preview=True`) created resources get no id and no
computed state, so everything derived from them is unknown, as in a real first preview.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pulumi

FAKE_TENANCY_PREFIX = "Xyzq"
UBUNTU_BUILD = "2026.10.15-0"
DEFAULT_ZONE_SIZE = 24
# Live record counts of zones the fake account holds; any other zone gets DEFAULT_ZONE_SIZE.
ZONE_SIZES = {"viktorbarzin.me": 180}
RESERVED_IP_POOL = ipaddress.ip_network("203.0.113.0/24")  # RFC 5737 documentation block
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's unknown-string sentinel
# Outputs each provider computes; in a first preview they are unknown.
COMPUTED = {"instance": ["state", "bootVolumeId", "privateIp", "publicIp", "timeCreated"],
            "publicip": ["state", "ipAddress", "scope", "timeCreated"],
            "vcn": ["state", "defaultRouteTableId"], "subnet": ["state", "virtualRouterIp"]}


def _digest(*parts: str, n: int = 60) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


def ocid(kind: str, region: str, *seed: str) -> str:
    return f"ocid1.{kind}.oc1.{region}.aaaaaaaa{_digest(kind, region, *seed)}"


@dataclass
class Zone:
    domain: str
    zone_id: str
    primary_mx: str
    size: int
    extra_records: list[dict] = field(default_factory=list)
    live: list[dict] | None = None  # a real zone's records (--live-zone) instead of made-up ones
    primary_preference: float = 1.0  # the made-up zone agrees with the stack; a real one decides

    def records(self) -> list[dict]:
        if self.live is not None:
            return [{"id": _digest("record", self.zone_id, r["type"], r["name"], r["content"], n=32),
                     "zoneId": self.zone_id, "ttl": 1.0, "proxied": False, "proxiable": r["type"] != "MX",
                     "comment": "", "tags": [], **r} for r in self.live + self.extra_records]
        base: list[dict[str, Any]] = [
            {"type": "MX", "name": self.domain, "content": self.primary_mx, "priority": self.primary_preference},
            {"type": "A", "name": self.primary_mx, "content": "198.51.100.7"},
            {"type": "TXT", "name": self.domain, "content": "v=spf1 mx -all"},
            {"type": "TXT", "name": f"_dmarc.{self.domain}", "content": "v=DMARC1; p=quarantine"},
        ]
        filler = [{"type": "CNAME", "name": f"svc{i:03d}.{self.domain}", "content": f"ingress.{self.domain}"}
                  for i in range(max(0, self.size - len(base) - len(self.extra_records)))]
        out = []
        for r in base + filler + self.extra_records:
            out.append({"id": _digest("record", self.zone_id, r["type"], r["name"], r["content"], n=32),
                        "zoneId": self.zone_id, "ttl": 1.0, "proxied": False, "proxiable": r["type"] != "MX",
                        "comment": "", "tags": [], **r})
        return out[: max(self.size, len(self.extra_records))]


class FakeCloud(pulumi.runtime.Mocks):
    def __init__(self, region: str, zones: list[Zone], first_preview: bool = False):
        self.region, self.first_preview = region, first_preview
        self.zones = {z.zone_id: z for z in zones}
        self.instances: dict[str, dict] = {}   # instance id -> inputs
        self.vnics: dict[str, str] = {}        # vnic id -> instance id

    # --- resources -------------------------------------------------------------------
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = dict(args.inputs)
        if not args.custom:
            return "", inputs
        if self.first_preview:
            kind = args.typ.split(":")[-1].lower()
            return "", {**inputs, **{k: UNKNOWN for k in COMPUTED.get(kind, [])}}
        token, name = args.typ, args.name
        if token.startswith("pulumi:providers:"):
            return _digest("provider", name, n=36), inputs
        if token.startswith("cloudflare:"):
            return _digest("dns", name, n=32), {**inputs, "proxiable": inputs.get("type") != "MX",
                                               "createdOn": "2026-11-25T00:00:00Z"}
        kind = token.split(":")[-1].lower()
        rid = ocid(kind, self.region, name)
        state = {**inputs, "state": "AVAILABLE", "timeCreated": "2026-11-25T00:00:00Z"}
        if kind == "instance":
            state.update(state="RUNNING", bootVolumeId=ocid("bootvolume", self.region, name),
                         privateIp=inputs.get("createVnicDetails", {}).get("privateIp", ""), publicIp="")
            self.instances[rid] = inputs
            self.vnics[ocid("vnic", self.region, rid)] = rid
        elif kind == "publicip":
            index = int(_digest("ip", name, n=4), 16) % 200 + 20
            state.update(state="ASSIGNED", ipAddress=str(RESERVED_IP_POOL.network_address + index),
                         scope="REGION")
        return rid, state

    # --- invokes ---------------------------------------------------------------------
    def call(self, args: pulumi.runtime.MockCallArgs):
        handler = {
            "oci:Identity/getAvailabilityDomains:getAvailabilityDomains": self._availability_domains,
            "oci:Core/getImages:getImages": self._images,
            "oci:Core/getVnicAttachments:getVnicAttachments": self._vnic_attachments,
            "oci:Core/getPrivateIps:getPrivateIps": self._private_ips,
            "cloudflare:index/getDnsRecords:getDnsRecords": self._dns_records,
        }.get(args.token)
        if handler is None:
            raise NotImplementedError(f"the fake cloud does not answer {args.token}")
        return handler(dict(args.args))

    def _availability_domains(self, a: dict) -> dict:
        region = self.region.upper()
        return {"compartmentId": a["compartmentId"], "id": "ads",
                "availabilityDomains": [{"id": ocid("availabilitydomain", self.region, str(i)),
                                         "name": f"{FAKE_TENANCY_PREFIX}:{region}-AD-{i}",
                                         "compartmentId": a["compartmentId"]} for i in (1, 2, 3)]}

    def _images(self, a: dict) -> dict:
        images = []
        if a.get("operatingSystem") == "Canonical Ubuntu" and a.get("shape", "").startswith("VM.Standard.E"):
            for build in (UBUNTU_BUILD, "2026.09.30-0"):
                images.append({
                    "id": ocid("image", self.region, build), "compartmentId": None,
                    "displayName": f"Canonical-Ubuntu-{a.get('operatingSystemVersion')}-{build}",
                    "operatingSystem": "Canonical Ubuntu", "operatingSystemVersion": a.get("operatingSystemVersion"),
                    "state": "AVAILABLE", "sizeInMbs": 47694.0, "timeCreated": f"{build[:10]}T00:00:00Z"})
        return {"images": images, "id": "images", "compartmentId": a.get("compartmentId")}

    def _vnic_attachments(self, a: dict) -> dict:
        iid = a.get("instanceId", "")
        attachments = [{"id": ocid("vnicattachment", self.region, vnic), "vnicId": vnic, "instanceId": iid,
                        "state": "ATTACHED", "compartmentId": a.get("compartmentId")}
                       for vnic, owner in self.vnics.items() if owner == iid]
        return {"vnicAttachments": attachments, "id": "vnics", "compartmentId": a.get("compartmentId")}

    def _private_ips(self, a: dict) -> dict:
        vnic = a.get("vnicId", "")
        inputs = self.instances.get(self.vnics.get(vnic, ""), {})
        address = inputs.get("createVnicDetails", {}).get("privateIp", "10.0.0.2")
        return {"id": "privateips", "vnicId": vnic,
                "privateIps": [{"id": ocid("privateip", self.region, vnic), "ipAddress": address,
                                "isPrimary": True, "vnicId": vnic}]}

    def _dns_records(self, a: dict) -> dict:
        zone = self.zones.get(a.get("zoneId", ""))
        if zone is None:
            raise ValueError(f"cloudflare: zone {a.get('zoneId')!r} not found (error 7003)")
        return {"zoneId": zone.zone_id, "results": zone.records()}
