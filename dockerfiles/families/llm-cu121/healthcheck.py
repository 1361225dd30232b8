#!/usr/bin/env python3
"""Docker HEALTHCHECK: GET http://127.0.0.1:$RIG_PORT$RIG_HEALTH_PATH must answer 2xx with a JSON
body whose "status" is "ok" (a 200 saying "degraded" is unhealthy)."""

import json
import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('RIG_PORT', '8080')}{os.environ.get('RIG_HEALTH_PATH', '/health')}"
try:
    with urllib.request.urlopen(url, timeout=2) as response:
        body = json.load(response)
except Exception as e:  # noqa: BLE001 - any failure is unhealthy
    print(f"unhealthy: {e}")
    sys.exit(1)
print(body)
sys.exit(0 if body.get("status") == "ok" else 1)
