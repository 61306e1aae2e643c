#!/usr/bin/env python3
"""An independent WebSocket peer (Python `websockets`) for gatewarden's transparency tests.

  ws_peer.py server          echo server on 127.0.0.1:<free port>, permessage-deflate on;
                             prints the port, then serves until stdin closes. The text
                             "close-me" makes it close with 4000 "bye".
  ws_peer.py client URL TOKEN
                             runs a scripted session, prints a JSON summary of everything
                             it observed (negotiated extension, echoes, pong, close).
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


async def server():
    async with serve(echo, "127.0.0.1", 0, compression="deflate", ping_interval=None,
                     max_size=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        print(port, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


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
    if sys.argv[1] == "server":
        asyncio.run(server())
    else:
        asyncio.run(client(sys.argv[2], sys.argv[3]))
