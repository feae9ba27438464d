-- linux.lua - parses classic syslog lines (RFC 3164 style, as written by
-- sysklogd to /var/log/messages).
--
--   Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; ...
--   Jun 15 04:06:20 combo logrotate: ALERT exited abnormally with [1]
--   <month> <day> <hh:mm:ss> <host> <program>[<pid>]: <content>
--
-- Fields set on a record whose body matches (the body itself is kept):
--   month      "Jun"
--   day        14          integer
--   log_time   "15:16:01"  (the name `time` is the record's own timestamp)
--   host       "combo"
--   component  "sshd(pam_unix)", "kernel", "syslogd 1.4.1", "-- root" ...
--              (the program tag: it may hold blanks)
--   pid        19939       integer; absent when the tag has no [pid]
--   content    the message, without trailing blanks
-- The record's time is month, day and log_time, in the current year (or
-- the last one when that would be more than a day ahead), taken as UTC.
-- A line that does not match is left unchanged.
--
-- Checked against the Loghub Linux sample: on all 2,000 lines these fields
-- equal the columns of Linux_2k.log_structured.csv, which names them
-- Month, Date (the day), Time, Level (the host), Component, PID (empty
-- when absent) and Content.

-- The tag is the shortest text that a "[pid]: " or a ": " ends (the lazy
-- component, then an optional bracket); a bracket that does not hold
-- digits leaves pid out. Month, day and time together are the record's
-- time: syslog style, with no year.
local LINE = lugger.regex([[^\s*(?<time>(?<month>[A-Za-z]+)\s+(?<day:int>\d+)\s+(?<log_time>\d+:\d+:\d+))\s+(?<host>\S+)\s+(?<component>.*?)(?:\[(?:(?<pid:int>\d+)|.*?)\])?:\s+(?<content>.*?)\s*$]],
                          { flags = "s", types = { time = "syslog" } })

function process(rec)
  rec:parse_regex(LINE)
end
