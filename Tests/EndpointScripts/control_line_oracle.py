"""The FuzzTests' oracle, written from docs/control-protocol.md (sections 2 and 3) with
Python's own JSON parser, independent of the daemon's code: for each request line, whether
the daemon answers it, and with which commandId. Strict JSON as the protocol defines it:
RFC 8259, a name at most once per object, numbers within a double's range, nesting at most
512 deep.

    python3 control_line_oracle.py < lines > expectations

Input: request lines separated by 0x0A (any other bytes inside). Output: one JSON object per
line: {"reply": false} (no reply: an empty line), or {"reply": true, "id": <the commandId
the reply carries>} plus "skip": "always" (a shutdown: the fuzzer never sends it) or
"skip": "if-valid" (a startRecording that reaches its own parameters: the fuzzer sends it
only if they are invalid, so that no session starts).
"""
import json
import math
import sys

PREFIX = b"videodb_recorder|"
MAX_ID_BYTES = 256


MAX_DEPTH = 512


def reject_constant(name):
    # NaN, Infinity, -Infinity are not JSON (RFC 8259), though Python accepts them by default.
    raise ValueError(name)


def unique_names(pairs):
    # A name twice in one object is refused (Python would keep the last).
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate name")
    return dict(pairs)


def finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("beyond a double")
    return value


def bounded_int(text):
    value = int(text)
    if abs(value) > sys.float_info.max:
        raise ValueError("beyond a double")
    return value


def depth(value):
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def has_lone_surrogate(value):
    # UTF-8 cannot carry a lone surrogate ("\ud800" escaped): such a string is not valid text.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return False
        except UnicodeEncodeError:
            return True
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    return False


def expected(line):
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line:
        return {"reply": False}
    null = {"reply": True, "id": None}
    # 1. the prefix, at byte 0
    if not line.startswith(PREFIX):
        return null
    # 2. valid JSON (UTF-8), 3. an object
    try:
        value = json.loads(line[len(PREFIX):].decode("utf-8"), parse_constant=reject_constant,
                           object_pairs_hook=unique_names, parse_float=finite_float, parse_int=bounded_int)
    except (ValueError, RecursionError):
        return null
    if not isinstance(value, dict) or has_lone_surrogate(value) or depth(value) > MAX_DEPTH:
        return null
    # 4. commandId: a string of at most 256 bytes, a signed 64-bit integer (an integral
    #    float too), null or absent; anything else is refused with a null commandId.
    command_id = value.get("commandId")
    if command_id is None:
        echo = None
    elif isinstance(command_id, bool):
        return null
    elif isinstance(command_id, str):
        if len(command_id.encode("utf-8")) > MAX_ID_BYTES:
            return null
        echo = command_id
    elif isinstance(command_id, int):
        if not -(2 ** 63) <= command_id < 2 ** 63:
            return null
        echo = command_id
    elif isinstance(command_id, float):
        if not math.isfinite(command_id) or not command_id.is_integer() or not -(2.0 ** 63) <= command_id < 2.0 ** 63:
            return null
        echo = int(command_id)
    else:
        return null
    # From here on every reply echoes the commandId.
    result = {"reply": True, "id": echo}
    command = value.get("command")
    params = value.get("params")
    if isinstance(command, str) and (params is None or isinstance(params, dict)):
        if command == "shutdown":
            result["skip"] = "always"
        elif command == "startRecording":
            result["skip"] = "if-valid"
    return result


def main():
    data = sys.stdin.buffer.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = sys.stdout
    for line in lines:
        out.write(json.dumps(expected(line)) + "\n")


if __name__ == "__main__":
    main()
