#!/usr/bin/python3
"""check-meta.py DIR: DIR/META.json follows the PGXN Meta Spec 1.0.0.

The rules of https://pgxn.org/spec/ (as in PGXN's JSON schemas for v1):
required keys and their types, semantic versions, version ranges of
prereqs, the license names and release_status values it lists, and no
unknown keys but x_ ones.  Then what a schema cannot see: every file that
provides names exists under DIR (run it on a distribution, where built
files are absent), and a "postgresql" license matches DIR/LICENSE.

Prints one line per violation and exits 1 if there is any.
"""
import json
import os
import re
import sys

SEMVER = (r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
          r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
          r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
          r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?")
RANGE_ITEM = r"(?:(?:[=!]=|[<>]=?)\s*)?" + SEMVER
LICENSES = {
    "agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd",
    "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1",
    "lgpl_3_0", "mit", "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5",
    "postgresql", "qpl_1_0", "ssleay", "sun", "zlib", "open_source",
    "restricted", "unrestricted", "unknown"}
PHASES = {"configure", "build", "test", "runtime", "develop"}
RELATIONS = {"requires", "recommends", "suggests", "conflicts"}
# The PostgreSQL License's grant, as its text has it.
PG_LICENSE_GRANT = ("Permission to use, copy, modify, and distribute this "
                    "software and its documentation for any purpose, without "
                    "fee, and without a written agreement is hereby granted")

errors = []


def err(where, msg):
    errors.append(f"META.json: {where}: {msg}")


def custom(key):
    return re.match(r"^[xX]_.", key) is not None


def is_str(v, minlen=1):
    return isinstance(v, str) and len(v) >= minlen


def is_uri(v):
    return isinstance(v, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$", v)


def is_semver(v):
    return isinstance(v, str) and re.fullmatch(SEMVER, v) is not None


def is_term(v):
    return isinstance(v, str) and re.fullmatch(r"[^/\\\s\x00-\x1f\x7f]{2,}", v)


def is_path(v):
    return (is_str(v, 2) and not v.startswith("/") and "\\" not in v
            and ".." not in v.split("/"))


def is_range(v):
    if v == 0 or v == "0":
        return True
    return isinstance(v, str) and re.fullmatch(
        RANGE_ITEM + r"(?:,\s*" + RANGE_ITEM + r")*", v) is not None


def only_keys(where, obj, allowed):
    for k in obj:
        if k not in allowed and not custom(k):
            err(where, f"unknown key {k!r}")


def check(meta, root):
    if not isinstance(meta, dict):
        err("top", "must be an object")
        return
    for k in ("name", "version", "abstract", "maintainer", "license",
              "provides", "meta-spec"):
        if k not in meta:
            err(k, "required key missing")
    only_keys("top", meta, {
        "name", "version", "abstract", "maintainer", "license", "provides",
        "meta-spec", "description", "generated_by", "tags", "no_index",
        "prereqs", "release_status", "resources"})

    if "name" in meta and not is_term(meta["name"]):
        err("name", "a term of 2+ characters without /, \\, spaces or control characters")
    if "version" in meta and not is_semver(meta["version"]):
        err("version", f"{meta['version']!r} is not a semantic version")
    for k in ("abstract", "description", "generated_by"):
        if k in meta and not is_str(meta[k]):
            err(k, "a non-empty string")

    m = meta.get("maintainer")
    if m is not None and not (is_str(m) or (isinstance(m, list) and m
                                            and all(is_str(x) for x in m))):
        err("maintainer", "a non-empty string or array of them")

    lic = meta.get("license")
    if lic is not None:
        if isinstance(lic, str):
            names = [lic]
        elif isinstance(lic, list) and lic:
            names = lic
        elif isinstance(lic, dict) and lic:
            names = []
            for k, v in lic.items():
                if not is_uri(v):
                    err("license", f"{k!r} must map to a URI")
        else:
            names = None
            err("license", "a license name, an array of them or an object of URIs")
        for n in names or []:
            if n not in LICENSES:
                err("license", f"{n!r} is not a license name of the spec")
        if names and "postgresql" in names:
            try:
                text = " ".join(open(os.path.join(root, "LICENSE")).read().split())
            except OSError:
                text = ""
            if PG_LICENSE_GRANT not in text:
                err("license", "is postgresql but LICENSE is not the PostgreSQL License")

    ms = meta.get("meta-spec")
    if ms is not None:
        if not isinstance(ms, dict):
            err("meta-spec", "must be an object")
        else:
            only_keys("meta-spec", ms, {"version", "url"})
            if not (isinstance(ms.get("version"), str)
                    and re.fullmatch(r"1\.0\.\d+", ms["version"])):
                err("meta-spec.version", "must be 1.0.x")
            if "url" in ms and ms["url"] not in ("https://pgxn.org/meta/spec.txt",
                                                 "http://pgxn.org/meta/spec.txt"):
                err("meta-spec.url", "must be https://pgxn.org/meta/spec.txt")

    pv = meta.get("provides")
    if pv is not None:
        if not isinstance(pv, dict) or not pv:
            err("provides", "a non-empty object")
        else:
            for ext, e in pv.items():
                w = f"provides.{ext}"
                if not is_term(ext):
                    err(w, "the extension name must be a term")
                if not isinstance(e, dict):
                    err(w, "must be an object")
                    continue
                only_keys(w, e, {"file", "version", "abstract", "docfile"})
                for k in ("file", "version"):
                    if k not in e:
                        err(w, f"required key {k!r} missing")
                if "version" in e and not is_semver(e["version"]):
                    err(w + ".version", f"{e['version']!r} is not a semantic version")
                if "abstract" in e and not is_str(e["abstract"]):
                    err(w + ".abstract", "a non-empty string")
                for k in ("file", "docfile"):
                    if k not in e:
                        continue
                    if not is_path(e[k]):
                        err(f"{w}.{k}", f"{e[k]!r} is not a relative unix path")
                    elif not os.path.isfile(os.path.join(root, e[k])):
                        err(f"{w}.{k}", f"{e[k]} is not in the distribution")

    if "tags" in meta:
        t = meta["tags"]
        if not (isinstance(t, list) and t and all(
                isinstance(x, str) and re.fullmatch(r"[^/\\\x00-\x1f\x7f]{2,255}", x)
                for x in t)):
            err("tags", "an array of tags of 2 to 255 characters without /, \\ or control characters")

    if "no_index" in meta:
        ni = meta["no_index"]
        if not isinstance(ni, dict):
            err("no_index", "must be an object")
        else:
            only_keys("no_index", ni, {"file", "directory"})
            for k, v in ni.items():
                if not custom(k) and not (is_str(v) or (isinstance(v, list) and all(is_str(x) for x in v))):
                    err(f"no_index.{k}", "a path or an array of paths")

    if "release_status" in meta and meta["release_status"] not in ("stable", "testing", "unstable"):
        err("release_status", f"{meta['release_status']!r} is not stable, testing or unstable")

    pr = meta.get("prereqs")
    if pr is not None:
        if not isinstance(pr, dict) or not pr:
            err("prereqs", "a non-empty object")
        else:
            only_keys("prereqs", pr, PHASES)
            for ph, rels in pr.items():
                if custom(ph):
                    continue
                if not isinstance(rels, dict) or not rels:
                    err(f"prereqs.{ph}", "a non-empty object")
                    continue
                only_keys(f"prereqs.{ph}", rels, RELATIONS)
                for rel, deps in rels.items():
                    if custom(rel):
                        continue
                    if not isinstance(deps, dict):
                        err(f"prereqs.{ph}.{rel}", "must be an object")
                        continue
                    for name, rng in deps.items():
                        if not is_term(name):
                            err(f"prereqs.{ph}.{rel}", f"{name!r} is not a term")
                        if not is_range(rng):
                            err(f"prereqs.{ph}.{rel}.{name}", f"{rng!r} is not a version range")

    rs = meta.get("resources")
    if rs is not None:
        if not isinstance(rs, dict) or not rs:
            err("resources", "a non-empty object")
        else:
            only_keys("resources", rs, {"homepage", "bugtracker", "repository"})
            if "homepage" in rs and not is_uri(rs["homepage"]):
                err("resources.homepage", "must be a URI")
            bt = rs.get("bugtracker")
            if bt is not None:
                if not isinstance(bt, dict) or not ("web" in bt or "mailto" in bt):
                    err("resources.bugtracker", "an object with web or mailto")
                else:
                    only_keys("resources.bugtracker", bt, {"web", "mailto"})
                    if "web" in bt and not is_uri(bt["web"]):
                        err("resources.bugtracker.web", "must be a URI")
                    if "mailto" in bt and not re.fullmatch(r"[^@\s]+@[^@\s]+", str(bt["mailto"])):
                        err("resources.bugtracker.mailto", "must be an email address")
            rp = rs.get("repository")
            if rp is not None:
                if not isinstance(rp, dict):
                    err("resources.repository", "must be an object")
                else:
                    only_keys("resources.repository", rp, {"url", "web", "type"})
                    if not ("web" in rp or ("url" in rp and "type" in rp)):
                        err("resources.repository", "needs web, or url and type")
                    for k in ("url", "web"):
                        if k in rp and not is_uri(rp[k]):
                            err(f"resources.repository.{k}", "must be a URI")
                    if "type" in rp and not (is_str(rp["type"]) and rp["type"] == rp["type"].lower()):
                        err("resources.repository.type", "a lower-case VCS name such as git")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    try:
        with open(os.path.join(root, "META.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        print(f"META.json: cannot read: {e}")
        return 1
    check(meta, root)
    for e in errors:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
