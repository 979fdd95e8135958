"""The backend half of a VideoDB app, written against the official SDK
(videodb 0.5.1, unmodified), pointed at capture-endpoint through base_url.

Usage: sdk_backend.py BASE_URL  (API key in VIDEO_DB_API_KEY)
Prints one JSON object with what the SDK saw; exits non-zero on any failure.
"""
import asyncio
import json
import os
import sys

import videodb
from videodb.exceptions import AuthenticationError


def main() -> None:
    base_url = sys.argv[1]
    out = {}
    conn = videodb.connect(api_key=os.environ["VIDEO_DB_API_KEY"], base_url=base_url)

    ws = conn.connect_websocket(collection_id="default")
    out["websocket_url_scheme"] = ws.url.split(":", 1)[0]

    async def open_socket():
        await ws.connect()
        connection_id = ws.connection_id
        await ws.close()
        return connection_id

    out["connection_id"] = asyncio.run(open_socket())

    session = conn.create_capture_session(
        end_user_id="sdk-user-1",
        collection_id="default",
        callback_url="http://127.0.0.1:9/hooks",
        ws_connection_id=out["connection_id"],
        metadata={"app": "sdk-test", "n": 1},
    )
    out["created"] = {"id": session.id, "status": session.status, "end_user_id": session.end_user_id,
                      "collection_id": session.collection_id, "metadata": session.metadata,
                      "callback_url": session.callback_url}

    fetched = conn.get_capture_session(session.id, collection_id="default")
    out["fetched"] = {"id": fetched.id, "status": fetched.status, "channels": len(fetched.channels),
                      "rtstreams": len(fetched.rtstreams)}

    second = conn.create_capture_session(end_user_id="sdk-user-2")
    listed = conn.list_capture_sessions(collection_id="default")
    out["listed"] = sorted(s.id for s in listed)
    out["listed_created"] = sorted(s.id for s in conn.list_capture_sessions(status="created"))
    out["listed_active"] = sorted(s.id for s in conn.list_capture_sessions(status="active"))
    out["second"] = second.id

    token = conn.generate_client_token(expires_in=600)
    out["token_length"] = len(token)
    out["token"] = token  # handed back to the test, which uploads with it

    try:
        videodb.connect(api_key="not-a-key-not-a-key", base_url=base_url).list_capture_sessions()
        out["wrong_key"] = "accepted"
    except AuthenticationError:
        out["wrong_key"] = "AuthenticationError"

    print(json.dumps(out))


if __name__ == "__main__":
    main()
