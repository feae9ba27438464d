#!/usr/bin/env python3
"""A script that exhausts settings.script_memory takes no neighbour down.

The script keeps a module-level cache that grows with every record (a
dedupe set that is never trimmed), so a worker's Lua state reaches
settings.script_memory (16 MiB) after a few thousand records. init()
stamps the state with an id, so records show which state processed them.

Run 1 (4 x 5,000 lines in one file, written at once):
- every line is delivered or in the dead-letter file, exactly once;
- the records in the dead-letter file are the ones that hit the limit,
  each with "<script>:<line>: not enough memory" and its file and offset;
  few of them (one per exhausted state);
- lugger_lua_states_recreated_total counts the recreations, the log says
  so, and records after each recreation were processed by a new state
  (init ran again): more than one state id among the delivered records;
- records of the same batch before the failing one are delivered too
  (no "not enough memory" in any delivered record, and nothing lost).
Then HOG, a record that alone needs more than the limit, is written: it
goes to the dead-letter file and the line after it is delivered.

Run 2: HOG is the first record of a fresh state: it exhausts it too, so it
is named in <state_dir>/poison.json (a poison record, as with
script_timeout) and the line after it is delivered.

Run 3 (the checkpoint set back to HOG): HOG is not run again: it goes to
the dead-letter file with "poison:" and the line after it is delivered.
"""

import json
import os

import lugger_it as it

SCRIPT = r"""
local seen = {}
local id

function init()
  id = tostring(seen)
end

function process(rec)
  local b = rec.body
  if b == "HOG" then
    local t = {}
    seen.hog = t
    for i = 1, 1e9 do t[i] = string.rep("h", 1000) .. i end
  end
  -- A cache that never forgets: about 4 KB per record.
  seen[#seen + 1] = string.rep(b, 40)
  rec.state = id
end
"""

NFILES_LINES = 20000


def records(path):
    if not os.path.exists(path):
        return []
    return it.read_jsonl(path, allow_partial_tail=True)


def main():
    it.require_binary()
    with it.WorkDir("script-memory") as wd:
        port = it.free_port()
        out = wd.p("out.jsonl")
        dead = os.path.join(wd.state, "dead-letter.jsonl")
        log = os.path.join(wd.logs, "app.log")
        conf = it.simple_config(
            wd, [log], out_path=out,
            settings={"script_memory": "16MiB", "workers": 1,
                      "http": "127.0.0.1:%d" % port},
            scripts=["cache.lua"], script_files={"cache.lua": SCRIPT})
        # 100-byte lines: 4 KB per record in the cache.
        lines = ["m%05d-%s" % (i, "x" * 93) for i in range(NFILES_LINES)]
        with open(log, "w") as f:
            f.write("".join(l + "\n" for l in lines))

        lg = it.Lugger(conf)

        def settled():
            return len(records(out)) + len(records(dead)) >= NFILES_LINES

        it.wait_for(settled, 120, "every line delivered or dead-lettered",
                    proc=lg, detail=lambda: "%d delivered, %d dead" % (
                        len(records(out)), len(records(dead))))
        delivered = [r["body"] for r in records(out)]
        deadrecs = records(dead)
        dead_bodies = [r["body"] for r in deadrecs]
        it.check(sorted(delivered + dead_bodies) == lines,
                 "lines lost or repeated: %d delivered + %d dead for %d "
                 "lines" % (len(delivered), len(dead_bodies), len(lines)))
        it.check(0 < len(deadrecs) <= 20,
                 "%d records in the dead-letter file (expected one per "
                 "exhausted state)" % len(deadrecs))
        for r in deadrecs:
            err = r.get("lugger.error", "")
            it.check("cache.lua:" in err and ": not enough memory" in err
                     and "app.log offset " in err,
                     "dead-letter error names no script, line, file or "
                     "offset: %r" % err)
            pos = err.split("cache.lua:")[1].split(":")[0]
            it.check(pos.isdigit(), "no line number in %r" % err)
        states = set(r.get("state") for r in records(out))
        it.check(len(states) >= 2,
                 "records processed by %d state(s); init did not run on a "
                 "new state" % len(states))
        recreated = it.metric_sum(port, "lugger_lua_states_recreated_total")
        it.check(recreated >= len(deadrecs),
                 "lugger_lua_states_recreated_total %r < %d dead records" % (
                     recreated, len(deadrecs)))
        it.check(any("Lua state" in str(x.get("msg")) and "recreated" in
                     str(x.get("msg")) for x in lg.log_records()),
                 "no log line says the state was recreated")
        it.log("run 1: %d delivered, %d dead-lettered, %d states, %s "
               "recreations" % (len(delivered), len(deadrecs), len(states),
                                recreated))

        # HOG, a record that alone needs more than the limit, on a state
        # that has run many records: dead-lettered, the state recreated,
        # the next line delivered.
        with open(log, "a") as f:
            f.write("before-hog\nHOG\nafter-hog\n")
        it.wait_for(lambda: "after-hog" in [r["body"] for r in records(out)],
                    60, "the line after HOG delivered", proc=lg)
        hog = [r for r in records(dead) if r.get("body") == "HOG"]
        it.check(len(hog) == 1 and "not enough memory" in
                 hog[0].get("lugger.error", ""),
                 "HOG in the dead-letter file: %r" % hog)
        lg.stop()

        # Run 2: HOG is the first record a fresh state sees: a poison
        # record, named in poison.json.
        hog_off = os.path.getsize(log)
        with open(log, "a") as f:
            f.write("HOG\nafter-hog2\n")
        lg = it.Lugger(conf)
        it.wait_for(lambda: "after-hog2" in [r["body"] for r in records(out)],
                    60, "run 2: the line after HOG delivered", proc=lg)
        poison_file = os.path.join(wd.state, "poison.json")
        it.check(os.path.exists(poison_file), "no poison.json")
        with open(poison_file) as f:
            poison = json.load(f)
        it.check(any(p.get("offset") == hog_off and "memory" in
                     p.get("reason", "") for p in poison),
                 "poison.json does not name HOG at offset %d: %r" % (
                     hog_off, poison))
        lg.stop()

        # Run 3: the checkpoint set back to HOG; HOG is not run again.
        with open(out, "w"), open(dead, "w"):
            pass
        it.rewrite_checkpoints(wd.state, lambda e: dict(e, offset=hog_off))
        lg = it.Lugger(conf)
        it.wait_for(lambda: "after-hog2" in [r["body"] for r in records(out)],
                    60, "run 3: the line after HOG delivered", proc=lg)
        hog = [r for r in records(dead) if r.get("body") == "HOG"]
        it.check(len(hog) == 1 and "poison:" in hog[0].get("lugger.error", ""),
                 "run 3: HOG not sent as poison: %r" % hog)
        it.check([r["body"] for r in records(out)] == ["after-hog2"],
                 "run 3 delivered %r" % [r["body"] for r in records(out)])
        lg.stop()
        return "%d lines, %d dead-lettered, %s state recreations, HOG " \
               "poisoned" % (len(lines), len(deadrecs), recreated)


if __name__ == "__main__":
    it.main("test_script_memory", main)
