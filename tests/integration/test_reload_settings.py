#!/usr/bin/env python3
"""README "Hot reload": a change to `settings.*` is logged as needing a
restart and the running values stay; a change to `settings.dead_letter`
fails the reload.

A running lugger's config is rewritten with every setting but
dead_letter changed and reloaded with SIGHUP: the reload succeeds, and
one warning "settings.<key> changed: it takes effect after a restart"
names each changed key (close_inactive, script_timeout and script_memory
were once changed without a word). A second rewrite that also changes
dead_letter is refused (the generation stays), and lugger still
delivers with the first config's outputs.
"""
import os
import re
import signal

import lugger_it as it

CHANGED = {
    "memory_budget": "48MiB", "workers": 3, "http": "127.0.0.1:%d",
    "checkpoint_interval": "300ms", "rescan_interval": "2s",
    "close_inactive": "7m", "shutdown_timeout": "11s",
    "script_timeout": "2s", "script_memory": "80MiB",
}


def reload_lines(lug):
    return [r.get("msg", "") for r in lug.log_records()
            if r.get("component") == "reload"]


def run():
    it.require_binary()
    with it.WorkDir("reload_settings") as wd:
        log = os.path.join(wd.logs, "a.log")
        with open(log, "w") as f:
            f.write("one\n")
        out = wd.p("out.jsonl")
        conf = it.simple_config(wd, [log], out_path=out)
        with it.Lugger(conf) as lug:
            lug.wait_started()
            it.wait_for(lambda: os.path.exists(out) and
                        len(it.read_jsonl(out, allow_partial_tail=True)) == 1,
                        30, "the first line delivered", proc=lug)
            changed = dict(CHANGED, state_dir=wd.mk("state2"))
            changed["http"] = changed["http"] % it.free_port()
            it.simple_config(wd, [log], out_path=out, settings=changed)
            lug.proc.send_signal(signal.SIGHUP)
            it.wait_for(lambda: any("config generation 1 running" in m
                                    for m in reload_lines(lug)),
                        30, "reload to generation 1", proc=lug,
                        detail=lambda: "\n".join(reload_lines(lug)))
            warned = set()
            for m in reload_lines(lug):
                g = re.search(r"settings\.(\w+) changed: it takes effect after "
                              r"a restart", m)
                if g:
                    warned.add(g.group(1))
            it.check(warned == set(changed), "warned about %s, changed %s"
                     % (sorted(warned), sorted(changed)))

            dl = dict(changed, dead_letter="out")
            it.simple_config(wd, [log], out_path=out, settings=dl)
            lug.proc.send_signal(signal.SIGHUP)
            it.wait_for(lambda: any("settings.dead_letter: changing it needs a "
                                    "restart" in m for m in reload_lines(lug)),
                        30, "the dead_letter change refused", proc=lug,
                        detail=lambda: "\n".join(reload_lines(lug)))
            it.check(not any("config generation 2 running" in m
                             for m in reload_lines(lug)),
                     "a dead_letter change took effect: %r" % reload_lines(lug))
            with open(log, "a") as f:
                f.write("two\n")
            it.wait_for(lambda: len(it.read_jsonl(out, allow_partial_tail=True))
                        == 2, 30, "the second line delivered", proc=lug)
            lug.stop()
        return ("%d settings changed by a reload: each logged as needing a "
                "restart; a dead_letter change refused" % len(warned))


if __name__ == "__main__":
    it.main("test_reload_settings", run)
