#!/usr/bin/env python3
"""An independent HTTP/2 client for gatewarden's tests: Python's `h2` (HTTP/2 framing and
flow control) and `wsproto` (WebSocket framing) over `ssl`, none of it shared with the Rust
side (which uses hyper and the `h2` crate).

    h2_peer.py SCENARIO HOST PORT CA_FILE 'JSON ARGS'

prints one JSON object with what it saw, and exits 0 (a failed expectation is for the Rust
test to judge, from the JSON); exit 2 with a message on stderr when it could not run.

Scenarios:
  hello     the TLS and HTTP/2 settings the server offered
  ws        one WebSocket stream: status, headers, the messages received, the close
  many      N WebSocket streams at once on one connection, each echoing its own message
  bulk      one binary message of N bytes, echoed; digests of what went and came back
  reset     three streams; the middle one is reset; the other two keep echoing
  slow      stream A floods and never reads; stream B's round trips meanwhile
  plain     a plain HTTP request over HTTP/2
  hold      one stream kept open through the server's drain (prints a line when ready,
            waits for one on stdin)
"""

import hashlib
import json
import os
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import wsproto.connection
import wsproto.events
import wsproto.frame_protocol

DEADLINE = 30.0


class Stream:
    def __init__(self, sid):
        self.sid = sid
        self.status = None
        self.headers = []
        self.body = b""
        self.ended = False
        self.reset = None
        # WebSocket over the stream (after a 200 to an extended CONNECT).
        self.ws = wsproto.connection.Connection(wsproto.connection.ConnectionType.CLIENT)
        self.messages = []
        self.partial = b""
        self.partial_text = ""
        self.close = None
        # Bytes not acknowledged yet (the slow stream keeps them so).
        self.hold = False
        self.held = 0


class Client:
    def __init__(self, host, port, ca, cert=None, key=None):
        ctx = ssl.create_default_context(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection((host, port), timeout=DEADLINE)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.alpn = self.sock.selected_alpn_protocol()
        self.cert = hashlib.sha256(self.sock.getpeercert(binary_form=True)).hexdigest()
        self.port = self.sock.getsockname()[1]
        if self.alpn != "h2":
            return
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        # Our side's connection window, large: a stream we leave unread must not stop
        # the others because of us.
        self.conn.increment_flow_control_window(64 * 1024 * 1024)
        self.streams = {}
        self.settings_seen = False
        self.goaway = None
        self.flush()
        self.pump(lambda: self.settings_seen)

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self, until, deadline=DEADLINE):
        end = time.monotonic() + deadline
        while not until():
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out waiting")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("timed out waiting")
            if not data:
                raise ConnectionError("server closed the connection")
            for ev in self.conn.receive_data(data):
                self.on_event(ev)
            self.flush()

    def on_event(self, ev):
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings_seen = True
        elif isinstance(ev, h2.events.ResponseReceived):
            s = self.streams[ev.stream_id]
            s.headers = [(k, v) for k, v in ev.headers]
            s.status = int(dict(ev.headers)[":status"])
        elif isinstance(ev, h2.events.DataReceived):
            s = self.streams.get(ev.stream_id)
            if s is None:
                return
            if s.hold:
                s.held += ev.flow_controlled_length
            elif ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if s.status == 200 and s.is_ws:
                self.on_ws(s, ev.data)
            else:
                s.body += ev.data
        elif isinstance(ev, h2.events.StreamEnded):
            s = self.streams.get(ev.stream_id)
            if s:
                s.ended = True
        elif isinstance(ev, h2.events.StreamReset):
            s = self.streams.get(ev.stream_id)
            if s:
                s.reset = int(ev.error_code)
                s.ended = True
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = int(ev.error_code)

    def on_ws(self, s, data):
        if s.ws.state == wsproto.connection.ConnectionState.CLOSED or not data:
            return
        s.ws.receive_data(data)
        for we in s.ws.events():
            if isinstance(we, wsproto.events.TextMessage):
                s.partial_text += we.data
                if we.message_finished:
                    s.messages.append(s.partial_text)
                    s.partial_text = ""
            elif isinstance(we, wsproto.events.BytesMessage):
                s.partial += we.data
                if we.message_finished:
                    s.messages.append(bytes(s.partial))
                    s.partial = b""
            elif isinstance(we, wsproto.events.CloseConnection):
                s.close = {"code": we.code, "reason": we.reason}
                if s.ws.state == wsproto.connection.ConnectionState.REMOTE_CLOSING:
                    self.send_ws(s, s.ws.send(we.response()))

    def request(self, headers, end=False, ws=False):
        sid = self.conn.get_next_available_stream_id()
        s = Stream(sid)
        s.is_ws = ws
        self.streams[sid] = s
        self.conn.send_headers(sid, headers, end_stream=end)
        self.flush()
        return s

    def open_ws(self, path, extra, version="13"):
        headers = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":path", path),
            (":authority", "localhost"),
            ("sec-websocket-version", version),
        ] + [(k, v) for k, v in extra]
        return self.request(headers, ws=True)

    def send_ws(self, s, data):
        """Sends as flow control allows, pumping the connection while it waits."""
        view = memoryview(data)
        while view:
            room = min(self.conn.local_flow_control_window(s.sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                before = self.conn.local_flow_control_window(s.sid)
                self.pump(lambda: self.conn.local_flow_control_window(s.sid) > before or s.ended)
                if s.ended:
                    return False
                continue
            self.conn.send_data(s.sid, bytes(view[:room]))
            view = view[room:]
            self.flush()
        return True

    def message(self, s, payload):
        if isinstance(payload, str):
            data = s.ws.send(wsproto.events.Message(data=payload))
        else:
            data = s.ws.send(wsproto.events.Message(data=payload))
        return self.send_ws(s, data)

    def close_ws(self, s, code=1000):
        self.send_ws(s, s.ws.send(wsproto.events.CloseConnection(code=code)))


def client(args):
    return Client(args["host"], args["port"], args["ca"], args.get("client_cert"),
                  args.get("client_key"))


def shape(s, c=None):
    return {
        "local_port": c.port if c else None,
        "status": s.status,
        "headers": [[k, v] for k, v in s.headers],
        "body": s.body.decode("utf-8", "replace"),
        "messages": [m if isinstance(m, str) else {"bytes": len(m)} for m in s.messages],
        "close": s.close,
        "reset": s.reset,
        "ended": s.ended,
    }


def hello(args):
    c = client(args)
    if c.alpn != "h2":
        return {"alpn": c.alpn, "cert_sha256": c.cert}
    remote = c.conn.remote_settings
    out = {
        "alpn": c.alpn,
        "cert_sha256": c.cert,
        "enable_connect_protocol": remote.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0),
        "max_concurrent_streams": remote.max_concurrent_streams,
        "initial_window_size": remote.initial_window_size,
    }
    if args.get("ws"):
        s = c.open_ws(args.get("path", "/"), args.get("headers", []))
        c.pump(lambda: s.status is not None)
        c.message(s, "over h2")
        c.pump(lambda: s.messages or s.ended)
        out["ws"] = shape(s)
    return out


def ws(args):
    c = client(args)
    s = c.open_ws(args.get("path", "/"), args.get("headers", []), args.get("version", "13"))
    c.pump(lambda: s.status is not None or s.ended)
    if s.status == 200:
        expect = args.get("expect", 0)
        # A client that waits for the server's first words (OpenClaw's `connect.challenge`).
        c.pump(lambda: len(s.messages) >= args.get("after", 0) or s.ended)
        for m in args.get("send", []):
            if not c.message(s, m):
                break
        try:
            c.pump(lambda: len(s.messages) >= expect and (s.close or not args.get("await_close"))
                   or s.ended, deadline=args.get("wait", DEADLINE))
        except TimeoutError:
            pass
    else:
        c.pump(lambda: s.ended)
    return shape(s, c)


def many(args):
    c = client(args)
    n = args["n"]
    streams = [c.open_ws(args.get("path", "/"), args.get("headers", [])) for _ in range(n)]
    c.pump(lambda: all(s.status is not None or s.ended for s in streams))
    opened = sum(1 for s in streams if s.status == 200)
    for i, s in enumerate(streams):
        if s.status == 200:
            c.message(s, f"stream {i} says hello")
    c.pump(lambda: all(s.messages or s.ended for s in streams if s.status == 200))
    echoed = sum(1 for i, s in enumerate(streams) if s.messages == [f"stream {i} says hello"])
    return {
        "opened": opened,
        "echoed": echoed,
        "statuses": sorted({s.status for s in streams if s.status is not None}),
        "open_streams": c.conn.open_outbound_streams,
    }


def bulk(args):
    c = client(args)
    s = c.open_ws(args.get("path", "/"), args.get("headers", []))
    c.pump(lambda: s.status is not None or s.ended)
    payload = os.urandom(args["size"])
    c.message(s, payload)
    c.pump(lambda: s.messages or s.ended, deadline=60)
    got = s.messages[0] if s.messages else b""
    return {
        "status": s.status,
        "sent": len(payload),
        "received": len(got) if isinstance(got, bytes) else -1,
        "same": got == payload,
    }


def reset(args):
    c = client(args)
    streams = [c.open_ws(args.get("path", "/"), args.get("headers", [])) for _ in range(3)]
    c.pump(lambda: all(s.status is not None for s in streams))
    for i, s in enumerate(streams):
        c.message(s, f"before {i}")
    c.pump(lambda: all(s.messages for s in streams))
    middle = streams[1]
    c.conn.reset_stream(middle.sid, error_code=h2.errors.ErrorCodes.CANCEL)
    c.flush()
    middle.ended = True
    out = {"before": [s.messages[:] for s in streams]}
    # The neighbours go on: ten more round trips each.
    for r in range(10):
        for i in (0, 2):
            c.message(streams[i], f"after {i}.{r}")
        c.pump(lambda: all(len(streams[i].messages) >= 2 + r for i in (0, 2)))
    out["after"] = [streams[i].messages[1:] for i in (0, 2)]
    out["neighbours_reset"] = [streams[i].reset for i in (0, 2)]
    for i in (0, 2):
        c.close_ws(streams[i])
    c.pump(lambda: all(streams[i].close for i in (0, 2)))
    out["closes"] = [streams[i].close for i in (0, 2)]
    out["goaway"] = c.goaway
    out["local_port"] = c.port
    return out


def slow(args):
    c = client(args)
    a = c.open_ws(args.get("path", "/"), args.get("headers", []))
    b = c.open_ws(args.get("path", "/"), args.get("headers", []))
    c.pump(lambda: a.status is not None and b.status is not None)
    a.hold = True  # never acknowledged: what the server sends on A stays unread
    chunk = b"x" * 65536
    flood = args["flood"]
    sent = 0
    # A floods, in whatever pieces flow control lets through, until its window stays shut
    # for a second (the server stopped taking A's bytes) or the whole flood is out.
    end = time.monotonic() + args.get("flood_for", 10)
    pending = b""
    while sent < flood and time.monotonic() < end:
        room = min(c.conn.local_flow_control_window(a.sid), c.conn.max_outbound_frame_size)
        if room <= 0:
            try:
                c.pump(lambda: c.conn.local_flow_control_window(a.sid) > 0, deadline=1)
            except TimeoutError:
                break
            continue
        if not pending:
            pending = a.ws.send(wsproto.events.Message(data=chunk))
        c.conn.send_data(a.sid, pending[:room])
        c.flush()
        sent += min(room, len(pending))
        pending = pending[room:]
    # B's round trips while A is stuck.
    rtts = []
    for r in range(args.get("rounds", 20)):
        t0 = time.monotonic()
        c.message(b, f"b{r}")
        c.pump(lambda: len(b.messages) > r, deadline=args.get("round_deadline", 10))
        rtts.append(time.monotonic() - t0)
    return {
        "a_sent": sent,
        "a_window": c.conn.local_flow_control_window(a.sid),
        "connection_window": c.conn.outbound_flow_control_window,
        "a_held": a.held,
        "a_reset": a.reset,
        "b_echoed": b.messages == [f"b{r}" for r in range(args.get("rounds", 20))],
        "b_max_rtt_ms": max(rtts) * 1000,
    }


def hold(args):
    """One stream, echoed once; then, told on stdin that the server is draining, the GOAWAY
    and the same stream echoing on, until the drain's end closes it."""
    c = client(args)
    # Python's h2 takes any GOAWAY as the connection's end (and then refuses the PING a
    # graceful GOAWAY comes with); RFC 9113 §6.8 lets the streams it did not cut finish,
    # and that is what is being tested.
    from hyperframe.frame import GoAwayFrame
    receive_goaway = c.conn._frame_dispatch_table[GoAwayFrame]

    def goaway_keeps_streams(frame):
        frames, events = receive_goaway(frame)
        c.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return frames, events

    c.conn._frame_dispatch_table[GoAwayFrame] = goaway_keeps_streams
    s = c.open_ws(args.get("path", "/"), args.get("headers", []))
    c.pump(lambda: s.status is not None or s.ended)
    c.message(s, "before")
    c.pump(lambda: s.messages or s.ended)
    print(json.dumps({"ready": True, "messages": s.messages}), flush=True)
    sys.stdin.readline()
    c.pump(lambda: c.goaway is not None)
    c.message(s, "during drain")
    c.pump(lambda: len(s.messages) >= 2 or s.ended)
    c.pump(lambda: s.close is not None or s.ended, deadline=60)
    return {"goaway": c.goaway, "messages": s.messages, "close": s.close, "reset": s.reset}


def plain(args):
    c = client(args)
    headers = [(":method", args.get("method", "GET"))]
    if args.get("path", "/") is not None:  # a plain CONNECT has neither
        headers += [(":scheme", "https"), (":path", args.get("path", "/"))]
    headers += [(":authority", args.get("authority", "localhost"))]
    headers += [(k, v) for k, v in args.get("headers", [])]
    body = args.get("body", "").encode()
    # A plain CONNECT (no `:path`) is what the test is after; this client would refuse it.
    c.conn.config.validate_outbound_headers = args.get("path", "/") is not None
    s = c.request(headers, end=not body)
    if body:
        c.send_ws(s, body)
        c.conn.end_stream(s.sid)
        c.flush()
    c.pump(lambda: s.ended)
    return shape(s, c)


def main():
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    scenario, host, port, ca, raw = sys.argv[1:]
    args = json.loads(raw)
    args.update(host=host, port=int(port), ca=ca)
    fn = {"hello": hello, "ws": ws, "many": many, "bulk": bulk, "reset": reset,
          "slow": slow, "plain": plain, "hold": hold}[scenario]
    try:
        out = fn(args)
    except (TimeoutError, ConnectionError, ssl.SSLError, OSError) as e:
        out = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


if __name__ == "__main__":
    import h2.errors  # noqa: F401  (reset uses it)
    main()
