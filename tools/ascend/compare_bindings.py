#!/usr/bin/env python3
"""Compares two bindgen outputs of the same crate: one made from finetp's own declarations, one
from the vendor's headers. Every function, enum constant and struct finetp declares must exist
in the vendor's with the same signature (type aliases resolved), value and fields.

Usage: compare_bindings.py OURS.rs THEIRS.rs    (exit 1 and a list of differences if any)
"""
import re
import sys


def parse(path):
    text = open(path).read()
    aliases = dict(re.findall(r"pub type (\w+) = ([^;]+);", text))
    # Newtype enums: `pub struct aclDataType(pub i32);` are their own types, kept as named.
    newtypes = set(re.findall(r"pub struct (\w+)\(pub [^)]+\);", text))
    consts = {}
    for ty, body in re.findall(r"impl (\w+) \{(.*?)\n\}", text, re.S):
        for name, val in re.findall(r"pub const (\w+): \w+ = \w+\((-?\d+)\);", body):
            consts[f"{ty}::{name}"] = int(val)
    for name, ty, val in re.findall(r"pub const (\w+): ([\w:]+) = (-?\d+);", text):
        consts[name] = int(val)
    structs = {}
    for name, body in re.findall(r"pub struct (\w+) \{(.*?)\n\}", text, re.S):
        fields = re.findall(r"pub (\w+): ([^,]+),", body)
        if not any(f.startswith("__") or "libloading" in t or "Result<" in t for f, t in fields):
            structs[name] = fields
    fns = {}
    for name, args, ret in re.findall(r"pub unsafe fn (\w+)\(\s*&self,?(.*?)\)\s*(?:->\s*([^{]+?))?\s*\{", text, re.S):
        params = [p.strip() for p in args.split(",") if p.strip()]
        types = [p.split(":", 1)[1].strip() for p in params]
        fns[name] = (types, (ret or "()").strip())

    def resolve(t, depth=0):
        t = re.sub(r"::std::os::raw::", "", t).replace("::core::ffi::", "").strip()
        for word in re.findall(r"\b\w+\b", t):
            if word in aliases and word not in newtypes and depth < 10:
                t = re.sub(rf"\b{word}\b", resolve(aliases[word], depth + 1), t)
        return re.sub(r"\s+", " ", t)

    fns = {n: ([resolve(a) for a in args], resolve(r)) for n, (args, r) in fns.items()}
    structs = {n: [(f, resolve(t)) for f, t in fs] for n, fs in structs.items()}
    return fns, consts, structs


def main():
    ours, theirs = parse(sys.argv[1]), parse(sys.argv[2])
    bad = []
    for name, sig in sorted(ours[0].items()):
        other = theirs[0].get(name)
        if other is None:
            bad.append(f"function {name}: not in the vendor's headers")
        elif other != sig:
            bad.append(f"function {name}: ours {sig}, theirs {other}")
    notes = []
    for name, val in sorted(ours[1].items()):
        other = theirs[1].get(name)
        if other is None and "::" not in name:
            # A #define of ours that the vendor writes as a `static const` (bindgen skips those).
            notes.append(f"constant {name}: bindgen found no such constant in the vendor's headers (a static const there?)")
        elif other is None:
            bad.append(f"constant {name}: not in the vendor's headers")
        elif other != val:
            bad.append(f"constant {name}: ours {val}, theirs {other}")
    for name, fields in sorted(ours[2].items()):
        other = theirs[2].get(name)
        if other is not None and other != fields:
            bad.append(f"struct {name}: ours {fields}, theirs {other}")
    print(f"{sys.argv[1]}: {len(ours[0])} functions, {len(ours[1])} constants, {len(ours[2])} structs checked against {sys.argv[2]}")
    for n in notes:
        print("  note:", n)
    for b in bad:
        print("  DIFFERS:", b)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
