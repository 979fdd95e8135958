"""Prints the operations docs/openapi.yaml lists, as JSON ["GET /path/{}", ...]
(path parameters reduced to {} so names need not match the router's)."""
import json
import re
import sys

import yaml

spec = yaml.safe_load(open(sys.argv[1]))
ops = []
for path, item in spec["paths"].items():
    for method in item:
        if method in ("get", "post", "put", "patch", "delete", "head", "options"):
            ops.append(method.upper() + " " + re.sub(r"\{[^}]*\}", "{}", path))
print(json.dumps(sorted(ops)))
