#!/usr/bin/env python3
# Usage: start `actiond serve --dev` in ./actiond-dev's parent, then: python3 scripts/wake_latency.py RUNS [BANNER_FILE]
# Measures how soon a ?wait request returns after the recipient's reply is
# posted: execute, wait until read, start a waiter, post the reply, time both.
import json, statistics, sys, threading, time, urllib.request

# The dev banner (serve --dev's stdout, saved to a file) holds the token on its 7th line.
base = "http://127.0.0.1:8080"
token = open(sys.argv[2] if len(sys.argv) > 2 else "actiond-dev.out").read().splitlines()[6]

def call(method, path, body=None, auth=True):
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(request) as response:
        return json.load(response)

action = call("POST", "/v2/_actions", {"name": "wake", "description": "wake latency", "type": "SEND_WHATSAPP", "action_timing": "during",
    "webhook": {"to": "12817126508", "from": "650175178190170", "template_name": "call_permission_request", "body_params": ["Ana"], "mandatory": True}})["data"]["action_id"]
latencies = []
for run in range(int(sys.argv[1])):
    execution = call("POST", f"/v2/_actions/{action}/_execute", {"call_id": f"wake-{time.time()}-{run}"})["data"]["execution_id"]
    while call("GET", f"/v2/_executions/{execution}")["data"]["status"] != "read":
        time.sleep(0.05)
    done = {}
    def waiter():
        call("GET", f"/v2/_executions/{execution}?wait=30")
        done["at"] = time.perf_counter()
    thread = threading.Thread(target=waiter); thread.start(); time.sleep(0.2)
    started = time.perf_counter()
    call("POST", "/_sandbox/reply", {"execution_id": execution, "text": "yes"}, auth=False)
    thread.join()
    latencies.append((done["at"] - started) * 1000)
print(f"reply posted -> waiter answered, {len(latencies)} runs: median {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms")
