"""Read a server's CPU time and memory from /proc (Linux only), for bench/fanout.py.

CPU is summed over the server's whole process tree (the root pid and all descendants) and
over every thread, so a hub that uses worker threads or child processes is charged fully.

* ``sched_ns``: sum of field 1 of /proc/<pid>/task/<tid>/schedstat (time on CPU, ns).
  On this paravirtualised kernel it excludes time stolen by the hypervisor.
* ``user_s`` / ``sys_s``: utime / stime of /proc/<pid>/stat (whole thread group, clock ticks);
  they include threads that already exited, which the schedstat sum misses.
"""

from __future__ import annotations

import os

HZ = os.sysconf("SC_CLK_TCK")


def _ppid_map() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
            out[int(name)] = int(rest[1])
        except (OSError, IndexError, ValueError):
            continue
    return out


def tree_pids(root: int) -> list[int]:
    """root and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppid_map().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu(root: int) -> dict:
    """CPU consumed so far by the tree under root."""
    sched_ns = 0
    utime = stime = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
            utime += int(rest[11])
            stime += int(rest[12])
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    sched_ns += int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return {"sched_ns": sched_ns, "user_s": utime / HZ, "sys_s": stime / HZ}


def cpu_delta_s(c0: dict, c1: dict) -> dict:
    """Server CPU seconds between two cpu() samples.

    ``cpu_s`` is the schedstat difference unless utime+stime grew clearly more (a thread or child
    exited in between, so its schedstat vanished); then utime+stime is used."""
    sched = (c1["sched_ns"] - c0["sched_ns"]) / 1e9
    user = c1["user_s"] - c0["user_s"]
    sys_ = c1["sys_s"] - c0["sys_s"]
    used = sched
    if user + sys_ > sched * 1.1 + 0.05:
        used = user + sys_
    return {"cpu_s": used, "sched_s": sched, "user_s": user, "sys_s": sys_}


def rss_kb(root: int) -> int:
    """VmRSS summed over the tree under root, in KiB."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            continue
    return total


def box() -> tuple[int, int, int]:
    """(busy incl. steal, total, steal) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v), v[7]


def box_cores(b0: tuple, b1: tuple) -> tuple[float, float]:
    """(busy cores incl. steal, steal cores) between two box() samples."""
    total = max(1, b1[1] - b0[1])
    n = os.cpu_count() or 1
    return (round((b1[0] - b0[0]) / total * n, 2), round((b1[2] - b0[2]) / total * n, 2))
