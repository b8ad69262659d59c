"""Stand-in for devstack's ini functions: iniset, iniget, iniadd, ...

Line-based like devstack's own (multi-valued options are repeated lines),
so what the plugin writes is what devstack would write.
"""

from __future__ import annotations

import os
import sys


def _read(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


def _find(lines: list[str], section: str) -> tuple[int, int]:
    start = -1
    for i, line in enumerate(lines):
        if line.strip() == f"[{section}]":
            start = i
            continue
        if start >= 0 and line.startswith("["):
            return start, i
    return start, len(lines)


def _values(lines: list[str], section: str, option: str) -> list[str]:
    start, end = _find(lines, section)
    out = []
    for line in lines[start + 1:end] if start >= 0 else []:
        key, sep, value = line.partition("=")
        if sep and key.strip() == option:
            out.append(value.strip())
    return out


def main(argv: list[str]) -> int:
    command, path, section, option = argv[:4]
    value = argv[4] if len(argv) > 4 else ""
    lines = _read(path)
    if command == "get":
        values = _values(lines, section, option)
        print(values[0] if values else "")
        return 0
    if command == "getmulti":
        print("\n".join(_values(lines, section, option)))
        return 0
    start, end = _find(lines, section)
    if start < 0:
        lines += [f"[{section}]"]
        start, end = len(lines) - 1, len(lines)
    if command == "set":
        keep = [line for line in lines[start + 1:end]
                if line.partition("=")[0].strip() != option]
        lines[start + 1:end] = keep + [f"{option} = {value}"]
    elif command == "add":
        lines.insert(end, f"{option} = {value}")
    else:
        raise SystemExit(f"unknown command {command}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
