#!/usr/bin/env python3
"""Regenerates the schema files beside this script from a kubectl binary.

kubectl links k8s.io/api and k8s.io/apimachinery, whose generated.pb.go files register their
FileDescriptorProtos (gzipped) together with the gogoproto field options. Those descriptors are the
exact wire schema of the kubectl version, so this script finds them in the binary, and writes one
proto-syntax file per package (comments are not in descriptors, so there are none).

Three facts that the JSON form depends on are carried as field options:
  [(gogoproto.nullable) = true]  a singular scalar that is a Go pointer: its zero value is sent
                                 (other scalars are plain values, `omitempty` in JSON);
  [(berth.inline) = true]        a Go struct embedded with `json:",inline"`: its fields belong to
                                 the enclosing JSON object (found from the binary's struct tags);
  [json_name = "..."]            where the Go JSON name differs from the proto field name.

Usage: extract.py /path/to/kubectl.1.33 OUTDIR
"""
import re
import sys
import zlib

PACKAGES = [
    "k8s.io/apimachinery/pkg/api/resource",
    "k8s.io/apimachinery/pkg/apis/meta/v1",
    "k8s.io/apimachinery/pkg/runtime",
    "k8s.io/apimachinery/pkg/runtime/schema",
    "k8s.io/apimachinery/pkg/util/intstr",
    "k8s.io/api/core/v1",
    "k8s.io/api/apps/v1",
    "k8s.io/api/authentication/v1",
    "k8s.io/api/authorization/v1",
    "k8s.io/api/autoscaling/v1",
    "k8s.io/api/batch/v1",
    "k8s.io/api/certificates/v1",
    "k8s.io/api/coordination/v1",
    "k8s.io/api/discovery/v1",
    "k8s.io/api/events/v1",
    "k8s.io/api/networking/v1",
    "k8s.io/api/policy/v1",
    "k8s.io/api/rbac/v1",
    "k8s.io/api/scheduling/v1",
]
GOGO_NULLABLE, GOGO_CUSTOMNAME = 65001, 65004
SCALARS = {3: "int64", 4: "uint64", 5: "int32", 8: "bool", 9: "string", 12: "bytes", 13: "uint32",
           1: "double", 2: "float", 6: "fixed64", 7: "fixed32", 15: "sfixed32", 16: "sfixed64",
           17: "sint32", 18: "sint64"}


def varint(b, i):
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def fields(b):
    i = 0
    while i < len(b):
        k, i = varint(b, i)
        f, w = k >> 3, k & 7
        if w == 0:
            v, i = varint(b, i)
        elif w == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        elif w == 1:
            v, i = b[i:i + 8], i + 8
        elif w == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {w}")
        yield f, v


def field_desc(b):
    d = {"label": 1, "options": {}}
    for f, v in fields(b):
        if f == 1:
            d["name"] = v.decode()
        elif f == 3:
            d["number"] = v
        elif f == 4:
            d["label"] = v
        elif f == 5:
            d["type"] = v
        elif f == 6:
            d["type_name"] = v.decode()
        elif f == 8:
            d["options"] = dict(fields(v))
    return d


def msg_desc(b):
    d = {"fields": [], "nested": [], "map_entry": False}
    for f, v in fields(b):
        if f == 1:
            d["name"] = v.decode()
        elif f == 2:
            d["fields"].append(field_desc(v))
        elif f == 3:
            d["nested"].append(msg_desc(v))
        elif f == 7:
            d["map_entry"] = dict(fields(v)).get(7, 0) == 1
    return d


def file_desc(b):
    d = {"messages": []}
    for f, v in fields(b):
        if f == 1:
            d["name"] = v.decode()
        elif f == 2:
            d["package"] = v.decode()
        elif f == 4:
            d["messages"].append(msg_desc(v))
    return d


def descriptors(binary):
    out = {}
    for m in re.finditer(rb"\x1f\x8b\x08\x00\x00\x00\x00\x00", binary):
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(binary[m.start():m.start() + (1 << 21)])
            fd = file_desc(raw)
        except Exception:
            continue
        if fd.get("name", "").startswith("k8s.io/"):
            out[fd["name"].removesuffix("/generated.proto")] = fd
    return out


def struct_tags(binary):
    """(Go field name, field number) of `json:",inline"` fields, and proto name -> JSON name renames."""
    inline, renames = set(), {}
    for m in re.finditer(rb'([A-Z][A-Za-z0-9]*).json:",inline" protobuf:"[a-z0-9]+,(\d+)', binary):
        inline.add((m.group(1).decode(), int(m.group(2))))
    for m in re.finditer(rb'json:"([A-Za-z0-9]+)[^"]*" protobuf:"[^"]*name=([A-Za-z0-9]+)', binary):
        j, p = m.group(1).decode(), m.group(2).decode()
        if j != p:
            renames[p] = j
    return inline, renames


def field_line(f, entries, inline, renames):
    opts = f["options"]
    number = f["number"]
    if f["type"] == 11:
        entry = entries.get(f["type_name"])
        type_name = f["type_name"]
    else:
        entry, type_name = None, SCALARS[f["type"]]
    if entry is not None:
        k, v = entry
        decl = f"map<{k}, {v}> {f['name']} = {number}"
    else:
        label = "repeated" if f["label"] == 3 else "optional"
        decl = f"{label} {type_name} {f['name']} = {number}"
    extra = []
    custom = opts.get(GOGO_CUSTOMNAME, b"").decode()
    if f["type"] == 11 and (custom, number) in inline and type_name.endswith("." + custom):
        extra.append("(berth.inline) = true")
    if f["type"] not in (11, 12) and f["label"] != 3 and opts.get(GOGO_NULLABLE, 1) != 0:
        extra.append("(gogoproto.nullable) = true")
    if f["name"] in renames:
        extra.append(f'json_name = "{renames[f["name"]]}"')
    return f"  {decl}" + (f" [{', '.join(extra)}]" if extra else "") + ";"


def map_entries(package, messages):
    """Map-entry message full names -> (key type, value type)."""
    out = {}
    for m in messages:
        for n in m["nested"]:
            if n["map_entry"]:
                kv = {f["name"]: (f.get("type_name") or SCALARS[f["type"]]) for f in n["fields"]}
                out[f".{package}.{m['name']}.{n['name']}"] = (kv["key"], kv["value"])
    return out


def render(fd, inline, renames):
    entries = map_entries(fd["package"], fd["messages"])
    lines = [
        "// Wire schema of " + fd["name"] + " (Kubernetes 1.33), from the descriptor",
        "// kubectl 1.33 embeds; regenerate with extract.py. Copyright The Kubernetes Authors,",
        "// Apache License 2.0 (http://www.apache.org/licenses/LICENSE-2.0).",
        'syntax = "proto2";',
        f"package {fd['package']};",
        "",
    ]
    for m in sorted(fd["messages"], key=lambda m: m["name"]):
        if any(n["map_entry"] is False for n in m["nested"]):
            raise SystemExit(f"nested message in {m['name']}")
        lines.append(f"message {m['name']} {{")
        lines += [field_line(f, entries, inline, renames) for f in sorted(m["fields"], key=lambda f: f["number"])]
        lines.append("}")
    return "\n".join(lines) + "\n"


def main():
    binary = open(sys.argv[1], "rb").read()
    found = descriptors(binary)
    inline, renames = struct_tags(binary)
    for pkg in PACKAGES:
        fd = found[pkg]
        path = f"{sys.argv[2]}/{fd['package']}.proto"
        with open(path, "w") as out:
            out.write(render(fd, inline, renames))
        print(path)


if __name__ == "__main__":
    main()
