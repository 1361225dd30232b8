"""real_time_audio_pipeline: a WebSocket server for audio frames, with HTTP health, port 6557.

ws://host:6557/stream   binary frames of 16-bit PCM in; one JSON text frame out per frame:
                        {"frame": n, "samples": k, "rms": r, "peak": p}
GET /health             {"status": "ok"} once the profile is read and the socket is open
"""

import asyncio
import json
import os
import signal

import h11
import numpy as np
import rigsvc
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

SERVICE = "real_time_audio_pipeline"
health = rigsvc.Health(SERVICE)
settings = {"frame_limit": 1 << 16}


def init(profile: dict) -> dict:
    settings["frame_limit"] = 4096 * int(profile["threads"])  # samples per frame we accept
    np.frombuffer(b"\x00\x00" * 8, dtype=np.int16).astype(np.float32)  # numpy is usable
    return {"frame_limit": settings["frame_limit"]}


async def read_head(reader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def http_answer(head: bytes) -> bytes:
    """Plain HTTP on the same port: /health, and 426 for anything else."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    event = conn.next_event()
    if isinstance(event, h11.Request) and event.target.split(b"?")[0] == b"/health":
        code, body = health.answer()
    else:
        code, body = 426, {"error": "connect with a WebSocket to /stream, or GET /health"}
    data = json.dumps(body).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
               ("Connection", "close")]
    return (conn.send(h11.Response(status_code=code, headers=headers))
            + conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage()))


def frame_stats(n: int, data: bytes) -> dict:
    pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype=np.int16).astype(np.float32) / 32768.0
    if pcm.size > settings["frame_limit"]:
        return {"frame": n, "error": f"frame over {settings['frame_limit']} samples"}
    rms = float(np.sqrt(np.mean(pcm * pcm))) if pcm.size else 0.0
    peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
    return {"frame": n, "samples": int(pcm.size), "rms": round(rms, 5), "peak": round(peak, 5)}


async def websocket(head: bytes, reader, writer) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    ws.receive_data(head)
    frames, open_ = 0, True
    while open_:
        for event in ws.events():
            if isinstance(event, Request):
                if health.status != "ok" or event.target != "/stream":
                    code = 503 if event.target == "/stream" else 404
                    writer.write(ws.send(RejectConnection(status_code=code)))
                    open_ = False
                    break
                writer.write(ws.send(AcceptConnection()))
            elif isinstance(event, BytesMessage):
                frames += 1
                writer.write(ws.send(TextMessage(data=json.dumps(frame_stats(frames, event.data)))))
            elif isinstance(event, Ping):
                writer.write(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                writer.write(ws.send(event.response()))
                open_ = False
        await writer.drain()
        if not open_:
            break
        data = await reader.read(65536)
        ws.receive_data(data or None)
        if not data:
            break


async def client(reader, writer) -> None:
    try:
        head = await asyncio.wait_for(read_head(reader), timeout=5)
        if b"upgrade: websocket" in head.lower():
            await websocket(head, reader, writer)
        else:
            writer.write(http_answer(head))
            await writer.drain()
    # asyncio.TimeoutError, not TimeoutError: they differ on Python 3.10 (the CUDA image's)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,  # noqa: UP041
            ConnectionError, h11.RemoteProtocolError):
        pass
    finally:
        writer.close()


async def main() -> None:
    rigsvc.crash_if_asked(SERVICE)
    port = int(os.environ.get("RIG_PORT", "6557"))
    server = await asyncio.start_server(client, "0.0.0.0", port)
    rigsvc.log(SERVICE, f"listening on :{port} (ws /stream, GET /health)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_in_executor(None, rigsvc.initialise, health, init)
    await stop.wait()
    server.close()
    rigsvc.log(SERVICE, "stopped")


if __name__ == "__main__":
    asyncio.run(main())
