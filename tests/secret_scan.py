"""The suite-wide secret scan (issue 6): reads what the test suite recorded (tests/util.rs,
`ledger`) and fails if a secret shows up where it must not.

- No password or room key the suite sent appears in any answer, event or log line of the hub.
- No host or participant token the hub handed out appears in any event or log line (each is in
  exactly the answer that hands it out, which the scan does not count).
- No argon2 hash appears anywhere.

Usage: python3 tests/secret_scan.py LEDGER_DIR
"""

import glob
import json
import os
import re
import sys


def load(directory, prefix):
    items = []
    for path in sorted(glob.glob(os.path.join(directory, prefix + "-*.jsonl"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line:
                    items.append(json.loads(line))
    return items


def distinctive(secret):
    # Short or one-letter strings ("x" * 10000 in the hostile suite) would match unrelated text.
    return len(secret) >= 6 and len(set(secret)) >= 4 and not secret.isspace()


def main():
    directory = sys.argv[1]
    if not os.path.isdir(directory):
        print(f"secret scan: nothing recorded in {directory}", file=sys.stderr)
        return 1
    passwords = sorted({p for p in load(directory, "passwords") if distinctive(p)}, key=len, reverse=True)
    tokens = {t for t in load(directory, "tokens") if distinctive(t)}
    said = {kind: load(directory, kind) for kind in ("response", "event", "log")}
    found = []
    password_re = re.compile("|".join(re.escape(p) for p in passwords)) if passwords else None
    token_re = re.compile(r"g[hp]_[A-Za-z0-9_-]+")
    for kind, texts in said.items():
        for text in texts:
            if "$argon2" in text:
                found.append((kind, "an argon2 hash", text))
            if password_re:
                m = password_re.search(text)
                if m:
                    found.append((kind, f"the password {m.group(0)!r}", text))
            if kind != "response":
                for candidate in token_re.findall(text):
                    if candidate in tokens:
                        found.append((kind, f"the token {candidate[:6]}…", text))
    counted = ", ".join(f"{len(v)} {k}s" for k, v in said.items())
    if found:
        for kind, what, text in found[:20]:
            at = text.find(what.split("'")[1]) if "'" in what else 0
            print(f"secret scan: {what} in a {kind}: …{text[max(0, at - 120):at + 120]}…", file=sys.stderr)
        print(f"secret scan: {len(found)} leaks in {counted}", file=sys.stderr)
        return 1
    print(
        f"secret scan: {len(passwords)} passwords and keys, {len(tokens)} tokens; none found in {counted}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
