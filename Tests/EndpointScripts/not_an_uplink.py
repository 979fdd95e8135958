"""WebSocket servers that are not capture endpoints, for the agent's
IncompatibleEndpointTests: they accept the upgrade to ws://127.0.0.1:PORT/anything
and then either say nothing ("silent": a server whose protocol waits for
something else) or send a message of some other API ("other").

    python3 not_an_uplink.py silent|other

Prints the port it listens on (chosen by the kernel), then serves until killed.
"""
import base64
import hashlib
import socket
import sys
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def serve(conn, mode):
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            data = conn.recv(4096)
            if not data:
                return
            request += data
        key = b""
        for line in request.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        if mode == "other":
            payload = b'{"event":"connected","message":"some other WebSocket API"}'
            conn.sendall(bytes([0x81, len(payload)]) + payload)  # one unmasked text frame
        while conn.recv(65536):  # whatever the client says (hello) goes unanswered
            pass


def main():
    mode = sys.argv[1]
    if mode not in ("silent", "other"):
        sys.exit("mode: silent or other")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, mode), daemon=True).start()


if __name__ == "__main__":
    main()
