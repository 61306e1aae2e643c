#!/usr/bin/env python3
"""An independent WebSocket peer (Python `websockets`) for gatewarden's transparency tests.

  ws_peer.py server          echo server on 127.0.0.1:<free port>, permessage-deflate on;
                             prints the port, then serves until stdin closes. The text
                             "close-me" makes it close with 4000 "bye".
  ws_peer.py client URL TOKEN
                             runs a scripted session, prints a JSON summary of everything
                             it observed (negotiated extension, echoes, pong, close).
  ws_peer.py server openclaw TOKEN
                             a gateway that authenticates in-band as OpenClaw does (challenge
                             first, then a `connect` request with params.auth.token), but
                             with permessage-deflate on, as many legacy gateways have it;
                             then echoes. Prints the port; serves until stdin closes.
  ws_peer.py client connect URL TOKEN
                             an in-band client with permessage-deflate on: waits for the
                             challenge, sends `connect` with TOKEN, then a message repeating
                             the connect request (compressed against it when the context is
                             kept). Prints a JSON summary.
"""
import asyncio
import hashlib
import json
import random
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(ws):
    try:
        async for msg in ws:
            if msg == "close-me":
                await ws.close(4000, "bye")
                return
            await ws.send(msg)
    except ConnectionClosed:
        pass


async def gateway(ws, token):
    """OpenClaw's shapes (../shared/openclaw-protocol.md), with compression negotiated."""
    await ws.send(json.dumps({"type": "event", "event": "connect.challenge",
                              "payload": {"nonce": "6f1c2d4e-nonce", "ts": 1}}))
    try:
        req = json.loads(await ws.recv())
    except (ConnectionClosed, ValueError):
        return
    presented = req.get("params", {}).get("auth", {}).get("token")
    if presented != token:
        msg = "unauthorized: gateway token mismatch (provide gateway auth token)"
        await ws.send(json.dumps({"type": "res", "id": req.get("id"), "ok": False,
                                  "error": {"code": "INVALID_REQUEST", "message": msg,
                                            "details": {"authReason": "token_mismatch"}}}))
        await ws.close(1008, msg)
        return
    await ws.send(json.dumps({"type": "res", "id": req.get("id"), "ok": True,
                              "payload": {"type": "hello-ok"}}))
    await echo(ws)


async def server(mode=None, token=None):
    handler = echo if mode is None else (lambda ws: gateway(ws, token))
    async with serve(handler, "127.0.0.1", 0, compression="deflate", ping_interval=None,
                     max_size=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        print(port, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


async def connect_client(url, token):
    out = {}
    async with connect(url, compression="deflate", ping_interval=None, max_size=None,
                       open_timeout=30, close_timeout=30) as ws:
        out["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
        out["challenge"] = json.loads(await ws.recv())["event"]
        req = json.dumps({"type": "req", "id": "c1", "method": "connect",
                          "params": {"minProtocol": 4, "maxProtocol": 4,
                                     "client": {"id": "cli", "mode": "cli",
                                                "version": "2026.9.6", "platform": "linux"},
                                     "auth": {"token": token}, "role": "operator",
                                     "scopes": ["operator.read", "operator.write"]}})
        await ws.send(req)
        try:
            res = json.loads(await ws.recv())
            out["ok"] = res.get("ok")
            out["error"] = (res.get("error") or {}).get("message")
            again = "again:" + req
            await ws.send(again)
            out["echo_matches"] = (await ws.recv()) == again
            await ws.close()
        except ConnectionClosed as e:
            out["close"] = [e.rcvd.code, e.rcvd.reason] if e.rcvd else None
    print(json.dumps(out))


def digest(msg):
    data = msg.encode() if isinstance(msg, str) else msg
    return ("text:" if isinstance(msg, str) else "binary:") + hashlib.sha256(data).hexdigest()[:16]


async def client(url, token):
    big = random.Random(7).randbytes(16 << 20)
    seen = []
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                       compression="deflate", ping_interval=None, max_size=None,
                       open_timeout=30, close_timeout=30) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions")
        for msg in ["hello", ["frag-", "ment", "ed"], b"", "", b"\x00\xff" * 1000, big]:
            await ws.send(msg)
            seen.append(digest(await ws.recv()))
        pong = await ws.ping(b"p1")
        latency = await asyncio.wait_for(pong, 30)
        seen.append("pong:" + str(latency >= 0))
        await ws.send("close-me")
        try:
            await ws.recv()
        except ConnectionClosed as e:
            close = [e.rcvd.code, e.rcvd.reason] if e.rcvd else None
    print(json.dumps({"extensions": ext, "received": seen, "close": close}))


if __name__ == "__main__":
    if sys.argv[1:3] == ["server", "openclaw"]:
        asyncio.run(server("openclaw", sys.argv[3]))
    elif sys.argv[1] == "server":
        asyncio.run(server())
    elif sys.argv[1:3] == ["client", "connect"]:
        asyncio.run(connect_client(sys.argv[3], sys.argv[4]))
    else:
        asyncio.run(client(sys.argv[2], sys.argv[3]))
