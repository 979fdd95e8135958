"""capture-agent as the capture runtime of the VideoDB Python SDK on Linux.

The SDK (``videodb[capture]``) imports this module and spawns the program that
``get_binary_path()`` names, with pipes on stdin and stdout; capture-agent then
serves the SDK's protocol there (``videodb_recorder|<JSON>`` lines). This is the
Linux runtime built by the capture-agent project, not a VideoDB binary.
"""
import os
import platform
import sys

__version__ = "@WHEEL_VERSION@"
#: The capture-agent release inside this wheel.
agent_version = "@AGENT_VERSION@"

_PLATFORM_DIR = "linux_x86_64"


def get_binary_path() -> str:
    """The absolute path of the bundled capture-agent (``bin/linux_x86_64/capture``)."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(
            f"this videodb-capture-bin is for Linux x86_64; this is {sys.platform} {platform.machine()}")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", _PLATFORM_DIR, "capture")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"capture-agent is missing from the installed package: {path}")
    if not os.access(path, os.X_OK):
        raise PermissionError(f"capture-agent is not executable: {path}")
    return path
