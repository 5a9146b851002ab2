#!/usr/bin/env python3
"""Write the fuzz seed corpus into DIR/<target>/ from the signature test
vectors (tests/vectors/*.json), the packaged config, and a few
hand-written inputs. Used by scripts/fuzz; see fuzz_targets/common.rs for
the input format."""
import glob
import hashlib
import json
import os
import sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = sys.argv[1]


def put(target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)


configs = []
for path in sorted(glob.glob(os.path.join(root, "tests/vectors/*.json"))):
    doc = json.load(open(path))
    scheme = doc["scheme"]
    for c in doc["cases"]:
        lines = [f"x-fuzz-now: {c['now']}"]
        lines += [f"x-fuzz-secret: {s}" for s in c["secrets"]]
        lines += [f"x-fuzz-opt-{k}: {toml_value(v) if isinstance(v, bool) else v}" for k, v in c["options"].items()]
        lines += [f"{k}: {v}" for k, v in c["headers"]]
        put(f"verify_{scheme}", "\n".join(lines) + "\n\n" + c["body"])
        for k, v in c["headers"]:
            put("parsers", v)
        opts = "".join(f"{k} = {toml_value(v)}\n" for k, v in c["options"].items())
        configs.append(f'[[hooks]]\nid = "h"\nscheme = "{scheme}"\nsecrets = ["env:S"]\n{opts}')

for c in sorted(set(configs)):
    put("config", c)
put("config", open(os.path.join(root, "packaging/webhookd.toml")).read())
put("config", """[server]
listen = "127.0.0.1:9000"
max_in_flight = 64
max_header_bytes = 16384
trusted_proxies = [{ from = "127.0.0.1", header = "CF-Connecting-IP" }, { from = "::1", header = "X-Forwarded-For" },
                   { from = "unix", header = "X-Real-IP" }, { from = "10.0.0.0/8", header = "X-Forwarded-For" }]
body_timeout = "10s"
[store]
url = "sqlite:///var/lib/webhookd/events.db"
[[hooks]]
id = "gh"
scheme = "github"
secrets = ["file:/etc/webhookd/gh.secret", "credential:gh-old"]
events = ["push", "ping"]
body_limit = 1048576
rate_limit = "600/min"
rate_burst = 20
unverified_rate_limit = "60/min"
unverified_rate_burst = 30
allow_ips = ["192.30.252.0/22", "2a0a:a440::/29", "140.82.112.0/20"]
""")

for peer, proxies, headers in [
    ("127.0.0.1:4000", "127.0.0.1 X-Forwarded-For", ["X-Forwarded-For: 203.0.113.9, 198.51.100.4"]),
    ("[::ffff:127.0.0.1]:4000", "127.0.0.0/8 CF-Connecting-IP,::1", ["CF-Connecting-IP: 2001:db8::1"]),
    ("10.0.0.2:80", "10.0.0.0/8 X-Forwarded-For", ["X-Forwarded-For: [2001:db8::2]:80", "X-Forwarded-For: 10.0.0.9, junk"]),
    (None, "unix X-Real-IP", ["X-Real-IP: 192.0.2.1:5555", "CF-Connecting-IP: 192.0.2.9"]),
]:
    lines = ([f"x-fuzz-opt-peer: {peer}"] if peer else []) + [f"x-fuzz-opt-proxies: {proxies}"] + headers
    put("client_ip", "\n".join(lines) + "\n\n")

for s in ["10/s", "600/min", "1.5/h", "10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "{timestamp}.{body}",
          "v0:{timestamp}:{delivery}:{body}", "1700000000", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
          "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1a,AAAA", '{"event":{"type":"x"}}']:
    put("parsers", s)
# import-hooks: the adnanh/webhook-shaped hooks files of tests/import_hooks.rs.
for path in sorted(glob.glob(os.path.join(root, "tests/vectors/adnanh/*"))):
    put("import_hooks", open(path).read())

# payload: rules, exec values and token places over JSON, form and payload= bodies.
rule = json.dumps({"all": [{"value": "header.x-github-event", "equals": "push"},
                           {"any": [{"value": "body.ref", "regex": "^refs/heads/(main|master)$"},
                                    {"not": {"value": "body.commits[0].id", "exists": True}}]},
                           {"value": "body.size", "gt": 1}]})
values = json.dumps({"args": ["x", {"value": "body.ref"}, {"value": "query.env", "default": "prod"}],
                     "env": {"A": {"value": "header.x-github-event"}},
                     "files": {"F": {"value": "body.bin", "base64": True}}})
for ctype, body in [
    ("application/json", '{"ref":"refs/heads/main","size":3,"commits":[{"id":"a"}],"bin":"aGk=","a.b":1}'),
    ("application/x-www-form-urlencoded", "payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D"),
    ("application/x-www-form-urlencoded", "token=t&command=%2Fdeploy&text=a+b"),
    ("", '[{"event":"processed"},{"event":"deferred"}]'),
]:
    put("payload", f"x-fuzz-opt-rule: {rule}\nx-fuzz-opt-values: {values}\nx-fuzz-opt-query: env=dev&token=t\n"
                   f"x-fuzz-opt-token: query.token\nx-fuzz-opt-ref: body.commits.0.id\nx-fuzz-secret: t\n"
                   f"x-github-event: push\ncontent-type: {ctype}\n\n{body}")

print(f"seeds written to {out}")
