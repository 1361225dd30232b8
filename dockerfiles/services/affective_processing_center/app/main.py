"""affective_processing_center: scores text for valence and arousal (port 6560).

GET  /health     {"status": "ok"} once the profile is read and the lexicon is loaded
POST /analyze    {"text": "..."} -> {"valence": v, "arousal": a, "words": n}
"""

import os

import numpy as np
import rigsvc
from cachetools import LRUCache

SERVICE = "affective_processing_center"
LEXICON = {  # word -> (valence, arousal), -1..1
    "calm": (0.6, -0.7), "happy": (0.9, 0.5), "angry": (-0.8, 0.8), "sad": (-0.7, -0.4),
    "great": (0.8, 0.4), "terrible": (-0.9, 0.6), "ok": (0.2, -0.1), "tired": (-0.3, -0.6),
}
state = {"vectors": None, "index": {}, "cache": LRUCache(maxsize=1024)}


def init(profile: dict) -> dict:
    words = sorted(LEXICON)
    state["index"] = {w: i for i, w in enumerate(words)}
    state["vectors"] = np.array([LEXICON[w] for w in words], dtype=np.float32)
    state["cache"] = LRUCache(maxsize=256 * int(profile["workers"]))
    return {"lexicon": len(words)}


def analyze(handler, request):
    text = str(request["text"]).lower()
    if text in state["cache"]:
        return 200, state["cache"][text]
    hits = [state["index"][w] for w in text.split() if w in state["index"]]
    score = state["vectors"][hits].mean(axis=0) if hits else np.zeros(2)
    result = {"valence": round(float(score[0]), 3), "arousal": round(float(score[1]), 3),
              "words": len(hits)}
    state["cache"][text] = result
    return 200, result


if __name__ == "__main__":
    rigsvc.serve_http(SERVICE, int(os.environ.get("RIG_PORT", "6560")), init,
                      {("POST", "/analyze"): analyze})
