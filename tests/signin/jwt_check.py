"""gatewarden against a real OpenID provider (provider.mjs, the npm `oidc-provider`): JWT
access tokens it issues by client_credentials are checked through its discovery document.

A token for gatewarden's audience passes and names its client; a token for another audience
and a tampered one are refused with their reasons; a live WebSocket is closed at its token's
`exp` (1008 `token expired`); `doctor` asks the provider. Usage: jwt_check.py GATEWARDEN ISSUER WORK
"""
import asyncio, base64, os, re, subprocess, sys, time, urllib.request

import websockets

BIN, ISSUER, WORK = sys.argv[1:4]
LOG = os.path.join(WORK, "gatewarden.log")


def fail(msg):
    print(f"FAIL: {msg}\n--- gatewarden log (last 40 lines)")
    print("".join(open(LOG).readlines()[-40:]) if os.path.exists(LOG) else "-")
    sys.exit(1)


def token(resource):
    basic = base64.b64encode(b"gatewarden:test-secret").decode()
    body = f"grant_type=client_credentials&scope=gateway&resource={resource}".encode()
    req = urllib.request.Request(f"{ISSUER}/token", data=body,
                                 headers={"authorization": f"Basic {basic}"})
    import json
    return json.load(urllib.request.urlopen(req, timeout=10))["access_token"]


def wait_log(pattern, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = open(LOG).read() if os.path.exists(LOG) else ""
        m = re.search(pattern, text)
        if m:
            return m
        time.sleep(0.1)
    fail(f"no log line matching {pattern!r} within {timeout}s")


def fp(tok):
    import hashlib
    return "fp:" + hashlib.sha256(tok.encode()).hexdigest()[:8]


async def main():
    async def echo(ws):
        try:
            async for m in ws:
                await ws.send(m)
        except websockets.exceptions.ConnectionClosed:
            pass  # gatewarden ends the upstream side when it closes a tunnel
    upstream = await websockets.serve(echo, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    cfg = os.path.join(WORK, "gw.toml")
    with open(cfg, "w") as f:
        f.write(f'listen = "127.0.0.1:0"\nupstream = "http://127.0.0.1:{up_port}"\n'
                f'[admin]\nlisten = ""\n[auth]\nreject = "http"\n'
                f'[[credentials]]\nformat = "jwks"\nissuer = "{ISSUER}"\naudience = "urn:gatewarden"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWARDEN_", "OPENCLAW_"))}
    env["HOME"] = WORK
    proc = subprocess.Popen([BIN, "-c", cfg], stdout=open(LOG, "w"), stderr=subprocess.STDOUT, env=env)
    try:
        port = wait_log(r"\[listen\] listening addr=127\.0\.0\.1:(\d+)").group(1)
        wait_log(rf"\[auth\] key set fetched .*url={re.escape(ISSUER)}/jwks keys=1 algorithms=[A-Za-z0-9,]*ES256")
        url = f"ws://127.0.0.1:{port}/ws"

        good = token("urn:gatewarden")
        async with websockets.connect(url, additional_headers={"authorization": f"Bearer {good}"}) as ws:
            await ws.send("hello")
            if await asyncio.wait_for(ws.recv(), 10) != "hello":
                fail("no echo through gatewarden")
        wait_log(rf"\[ws\] connected .*presented={fp(good)} client=gatewarden")
        print("ok: the provider's JWT access token passes and names its client (sub=gatewarden)")

        head, body, sig = good.split(".")
        tampered = f"{head}.{body}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
        for tok, reason in [(token("urn:other"), "jwt_wrong_audience"), (tampered, "jwt_bad_signature")]:
            try:
                async with websockets.connect(url, additional_headers={"authorization": f"Bearer {tok}"}):
                    fail(f"{reason}: the upgrade was let through")
            except websockets.exceptions.InvalidStatus as e:
                if e.response.status_code != 401:
                    fail(f"{reason}: answered {e.response.status_code}, not 401")
            wait_log(rf"\[ws\] unauthorized .*reason={reason} presented={fp(tok)}")
            print(f"ok: refused with 401 and reason={reason}")

        short = token("urn:gatewarden:short")
        async with websockets.connect(url, additional_headers={"authorization": f"Bearer {short}"}) as ws:
            await ws.send("before exp")
            await asyncio.wait_for(ws.recv(), 10)
            try:
                await asyncio.wait_for(ws.recv(), 30)
                fail("a message instead of the close at exp")
            except websockets.exceptions.ConnectionClosed as e:
                if e.rcvd is None or e.rcvd.code != 1008 or e.rcvd.reason != "token expired":
                    fail(f"closed with {e.rcvd}, not 1008 token expired")
        wait_log(r"\[ws\] closing .*reason=token_expired client=gatewarden")
        print("ok: the live WebSocket closed at the token's exp with 1008 token expired")
        text = open(LOG).read()
        if "eyJ" in text:
            fail("a JWT reached the log")
    finally:
        proc.terminate()
        proc.wait(10)
        upstream.close()

    out = subprocess.run([BIN, "doctor", "--listen", "127.0.0.1:0", "-c", cfg], env=env,
                         capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    for needle in [f"issuer {ISSUER} reachable", "1 usable key(s)", "clock within"]:
        if needle not in text:
            fail(f"doctor does not say {needle!r}:\n{text}")
    print("ok: doctor reaches the issuer, counts its keys and compares the clocks")


asyncio.run(main())
