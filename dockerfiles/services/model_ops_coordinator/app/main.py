"""model_ops_coordinator: which models this machine may load, and which are loaded.

GET  /health           {"status": "ok"} once the profile is read and the model cache is open
GET  /models           models known and loaded, with the machine's worker budget
POST /models/load      {"name": "...", "version": "1.2.0"}: load (in memory) if the budget allows
POST /models/unload    {"name": "..."}
"""

import os
import threading

import numpy as np
import rigsvc
from packaging.version import Version

SERVICE = "model_ops_coordinator"
CACHE = os.environ.get("RIG_MODEL_CACHE", "/cache")
state = {"loaded": {}, "workers": 1, "lock": threading.Lock()}


def init(profile: dict) -> dict:
    os.makedirs(CACHE, exist_ok=True)
    probe = os.path.join(CACHE, ".rig-write-test")
    with open(probe, "w") as f:  # the model cache must be writable by 10001
        f.write("ok")
    os.unlink(probe)
    state["workers"] = int(profile["workers"])
    np.ones((64, 64)) @ np.ones((64, 64))  # the math library loads and works
    token = rigsvc.secret("HF_TOKEN")  # the model-hub token, a file rig mounted; never logged
    return {"workers": state["workers"], "cuda_arch": profile.get("cuda_arch"),
            "model_hub": "token" if token else "anonymous"}


def models(handler, request):
    with state["lock"]:
        loaded = {name: str(version) for name, version in state["loaded"].items()}
    return 200, {"loaded": loaded, "workers": state["workers"]}


def load(handler, request):
    name, version = str(request["name"]), Version(str(request.get("version", "0")))
    with state["lock"]:
        if name not in state["loaded"] and len(state["loaded"]) >= state["workers"]:
            return 409, {"error": f"all {state['workers']} workers busy"}
        state["loaded"][name] = version
    return 200, {"loaded": name, "version": str(version)}


def unload(handler, request):
    with state["lock"]:
        found = state["loaded"].pop(str(request["name"]), None)
    return (200, {"unloaded": request["name"]}) if found else (404, {"error": "not loaded"})


if __name__ == "__main__":
    rigsvc.serve_http(SERVICE, int(os.environ.get("RIG_PORT", "8212")), init, {
        ("GET", "/models"): models,
        ("POST", "/models/load"): load,
        ("POST", "/models/unload"): unload,
    })
