#!/usr/bin/env python3
"""A log closed while idle (settings.close_inactive) and then deleted is
given up with one warning line, not two.

A running lugger with close_inactive 1s, rescan_interval 500ms; a.log gets
3 lines, is delivered, then closed as idle (no descriptor left on it in
/proc/<pid>/fd); a.log is deleted. Checked: exactly one warning names
a.log, the one that says it was closed while idle and gone before it could
be reopened (with the offset reading ended at); none says "deleted;
closed" as well (once logged as a second line at the same moment:
lg__tail_lost_parked's line, then lg__tail_close_file's); the 3 lines
delivered once.
"""
import os
import time

import lugger_it as it


def main():
    it.require_binary()
    with it.WorkDir("idle-deleted") as wd:
        log = wd.p("logs", "a.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        body = ["one", "two", "three"]
        with open(log, "w") as f:
            f.write("".join(b + "\n" for b in body))
        out = wd.p("out.jsonl")
        conf = it.simple_config(wd, [log], out_path=out,
                                settings={"close_inactive": "1s",
                                          "rescan_interval": "500ms"})
        with it.Lugger(conf) as lug:
            lug.wait_started()

            def bodies():
                return [r["body"] for r in it.read_jsonl(out, allow_partial_tail=True)] \
                    if os.path.exists(out) else []
            it.wait_for(lambda: bodies() == body, 30, "a.log's 3 lines", proc=lug,
                        detail=lambda: repr(bodies()))
            it.wait_for(lambda: not [p for p in lug.open_files() if p.startswith(log)],
                        30, "a.log closed as idle", proc=lug,
                        detail=lambda: "\n".join(lug.open_files()))
            os.unlink(log)

            def warned():
                return [str(r.get("msg", "")) for r in lug.log_records()
                        if r.get("level") in ("warn", "warning", "WARN")
                        and str(r.get("msg", "")).startswith(log + ": ")]
            it.wait_for(lambda: any("closed while idle" in m for m in warned()), 30,
                        "the warning that a.log was given up", proc=lug,
                        detail=lug.stderr_tail)
            time.sleep(1.5)  # three rescans: anything else about a.log shows
            w = warned()
            it.check(len(w) == 1, "a.log given up: %d warnings, wanted 1:\n%s"
                     % (len(w), "\n".join(w)))
            it.check("gone from its directory" in w[0] and "offset 14" in w[0], w[0])
            it.check(not [r for r in lug.log_records()
                          if "deleted; closed" in str(r.get("msg", ""))],
                     "a 'deleted; closed' line too:\n%s" % lug.stderr_tail())
            lug.stop()
            it.check(bodies() == body, "lines lost or repeated: %r" % bodies())
    return "a.log closed while idle, then deleted: one warning, lines delivered once"


if __name__ == "__main__":
    it.main("test_idle_deleted", main)
