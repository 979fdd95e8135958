"""After the test client streamed a session: what the SDK sees of it.

Usage: sdk_session.py BASE_URL SESSION_ID  (API key in VIDEO_DB_API_KEY)
"""
import json
import os
import sys

import videodb

conn = videodb.connect(api_key=os.environ["VIDEO_DB_API_KEY"], base_url=sys.argv[1])
session = conn.get_capture_session(sys.argv[2])
print(json.dumps({
    "status": session.status,
    "channels": [[c.id, type(c).__name__, c.is_primary] for c in session.channels],
    "primary_video_channel_id": session.primary_video_channel_id,
    "mic": [s.stream_url for s in session.get_rtstream("mic")],
    "screen": [s.stream_url for s in session.get_rtstream("screen")],
    "system_audio": [s.stream_url for s in session.get_rtstream("system_audio")],
    "active": [s.id for s in conn.list_capture_sessions(status="active")],
}))
