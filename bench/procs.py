"""Reading processes and Redis from the outside: CPU and memory from /proc, Redis command
counts from INFO commandstats. Linux only."""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = [
    "cpu_seconds",
    "descendants",
    "machine_busy_seconds",
    "redis_counts",
    "rss_kib",
    "summed_counts",
]

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime (fields 14 and 15 of /proc/PID/stat) in seconds; 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14, 15 counted from 1


def machine_busy_seconds() -> float:
    """CPU seconds every core has spent on anything but idle and I/O wait (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root``, pid → command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        found[pid] = cmdline
        todo += children.get(pid, [])
    return found


# What runs a Lua script (or function): the commands it calls are counted on their own too.
_SCRIPT_COMMANDS = {"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"}


def _info(sock: socket.socket, section: str) -> dict[str, str]:
    sock.sendall(f"INFO {section}\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):  # one bulk string: $<size>\r\n<text>\r\n
        data += chunk
        end = data.find(b"\r\n")
        if end > 0 and len(data) >= end + 2 + int(data[1:end]) + 2:
            break
    found: dict[str, str] = {}
    for line in data.decode().splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            found[name] = value
    return found


def redis_counts(port: int) -> dict[str, int]:
    """Redis's counters so far, our own INFO left out:

    - ``commands``: every command run, those a Lua script calls included;
    - ``scripts``: EVAL/EVALSHA/FCALL calls (one each, whatever the script does inside);
    - ``reads``: reads from client sockets (``total_reads_processed``): one per round trip,
      however many commands a pipeline carries;
    - ``cmd:<name>``: calls of each command.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        stats = _info(sock, "stats")
        commands = _info(sock, "commandstats")
    counts = {"commands": 0, "scripts": 0, "reads": int(stats["total_reads_processed"])}
    for name, value in commands.items():
        command = name.removeprefix("cmdstat_")
        if command == "info":
            continue
        calls = int(value.split(",", 1)[0].removeprefix("calls="))
        counts["commands"] += calls
        counts[f"cmd:{command}"] = calls
        if command in _SCRIPT_COMMANDS:
            counts["scripts"] += calls
    return counts


def summed_counts(per_server: list[dict[str, int]]) -> dict[str, int]:
    """Counters of several Redis servers (a cluster's primaries) added up name by name; a
    command that one server never ran counts 0 there."""
    total: dict[str, int] = {}
    for counts in per_server:
        for name, count in counts.items():
            total[name] = total.get(name, 0) + count
    return total
