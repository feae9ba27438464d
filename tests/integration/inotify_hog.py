#!/usr/bin/env python3
"""Takes this user's inotify limit for test_inotify_limits.py, and holds it
until stdin closes.

usage: inotify_hog.py instances|watches DIR

instances: opens inotify instances until the kernel refuses (EMFILE,
           fs.inotify.max_user_instances).
watches:   adds watches until the kernel refuses (ENOSPC,
           fs.inotify.max_user_watches), over directories it makes under DIR
           (a watch counts once per instance and inode), keeping one
           instance free for lugger.
Prints "ready <what it holds>" once done.
"""

import ctypes
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
IN_MODIFY = 0x2


def proc(name):
    with open("/proc/sys/fs/inotify/" + name) as f:
        return int(f.read())


def main():
    mode, base = sys.argv[1], sys.argv[2]
    fds = []
    if mode == "instances":
        while True:
            fd = libc.inotify_init1(0)
            if fd < 0:
                break
            fds.append(fd)
        print("ready %d instances (errno %d)" % (len(fds), ctypes.get_errno()),
              flush=True)
    else:
        max_w, max_i = proc("max_user_watches"), proc("max_user_instances")
        per = max_w // (max_i - 2) + 1
        os.makedirs(base, exist_ok=True)
        dirs = []
        for i in range(per):
            d = os.path.join(base, "w%05d" % i).encode()
            os.makedirs(d, exist_ok=True)
            dirs.append(d)
        total, err = 0, 0
        while err == 0 and len(fds) < max_i - 2:
            fd = libc.inotify_init1(0)
            if fd < 0:
                err = ctypes.get_errno()
                break
            fds.append(fd)
            for d in dirs:
                if libc.inotify_add_watch(fd, d, IN_MODIFY) < 0:
                    err = ctypes.get_errno()
                    break
                total += 1
        print("ready %d watches in %d instances (errno %d)" % (
            total, len(fds), err), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
