#!/usr/bin/env python3
"""The SCIM tests' view of the target, independent of flagsync: the
`list` is read with the scim2-client package (which checks each response
against the server's schemas); the changes made behind flagsync's back
with plain urllib. Against a SCIM 2.0 server (scim2-server in the tests).

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


def all_of(client, model):
    """Every resource of `model`, paged, as plain JSON."""
    from scim2_models import SearchRequest

    found = []
    while True:
        page = client.query(model, query_parameters=SearchRequest(start_index=len(found) + 1, count=500))
        resources = page.resources or []
        found.extend(r.model_dump(mode="json") for r in resources)
        if not resources or len(found) >= (page.total_results or 0):
            return found


def scim_client(base, token):
    from httpx2 import Client
    from scim2_client.engines.httpx2 import SyncSCIMClient

    client = SyncSCIMClient(Client(base_url=base, headers={"Authorization": "Bearer " + token}, timeout=30))
    client.discover()
    return client


def user_named(base, token, name):
    query = urllib.parse.quote(f'userName eq "{name}"')
    page = call(base, token, "GET", f"/Users?filter={query}")
    return page["Resources"][0]


def main():
    base, token, command, *args = sys.argv[1:]
    if command == "list":
        from scim2_models import Group, User

        client = scim_client(base, token)
        print(json.dumps({"users": all_of(client, User), "groups": all_of(client, Group)}))
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
