#!/usr/bin/env python3
"""The SCIM tests' view of the target, independent of flagsync: plain
urllib against a SCIM 2.0 server (scim2-server in the tests).

    scim_target.py BASE TOKEN list                 {"users": [...], "groups": [...]}
    scim_target.py BASE TOKEN delete USERNAME      deletes that user
    scim_target.py BASE TOKEN set-email USERNAME EMAIL
    scim_target.py BASE TOKEN create JSON          POSTs a User
"""

import json
import sys
import urllib.parse
import urllib.request


def call(base, token, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + token)
    request.add_header("Accept", "application/scim+json")
    if data is not None:
        request.add_header("Content-Type", "application/scim+json")
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read()
    return json.loads(text) if text else None


def all_of(base, token, kind):
    found = []
    while True:
        page = call(base, token, "GET", f"/{kind}?startIndex={len(found) + 1}&count=50")
        resources = page.get("Resources") or []
        found.extend(resources)
        if not resources or len(found) >= page.get("totalResults", 0):
            return found


def user_named(base, token, name):
    query = urllib.parse.quote(f'userName eq "{name}"')
    page = call(base, token, "GET", f"/Users?filter={query}")
    return page["Resources"][0]


def main():
    base, token, command, *args = sys.argv[1:]
    if command == "list":
        print(json.dumps({"users": all_of(base, token, "Users"), "groups": all_of(base, token, "Groups")}))
    elif command == "delete":
        call(base, token, "DELETE", "/Users/" + user_named(base, token, args[0])["id"])
    elif command == "set-email":
        user = user_named(base, token, args[0])
        user["emails"] = [{"value": args[1], "type": "work", "primary": True}]
        for key in ("meta",):
            user.pop(key, None)
        call(base, token, "PUT", "/Users/" + user["id"], user)
    elif command == "create":
        print(json.dumps(call(base, token, "POST", "/Users", json.loads(args[0]))))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
