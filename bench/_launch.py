"""Run a command and write its rusage to a JSON file: python _launch.py RESULT.json CMD [ARG...]

Why a separate launcher: on Linux a child's ru_maxrss starts at the RSS high-water
mark of the process it was forked/vforked from (exec keeps it), so a command
started straight from the big benchmark process would report at least the
harness's own peak RSS.  This launcher is a fresh, small interpreter: it forks,
the fork execs the command, and wait4() gives the command tree's own CPU time and
peak RSS (the floor is this launcher's few MiB).  Only os/sys/time are imported
before the fork to keep that floor low.
"""

import os
import sys
import time


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(2, f"cannot run {argv[0]}: {e}\n".encode())
        os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    import json

    with open(out, "w") as f:
        json.dump({"rc": rc, "wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
                   "maxrss_kib": ru.ru_maxrss, "inblock": ru.ru_inblock, "oublock": ru.ru_oublock}, f)
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
