-- openssh.lua - parses sshd lines from a syslog file (/var/log/secure,
-- auth.log).
--
--   Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186
--   <month> <day> <hh:mm:ss> <host> sshd[<pid>]: <content>
--
-- Fields set on a record whose body matches (the body itself is kept):
--   month     "Dec"
--   day       10          integer
--   log_time  "06:55:46"  (the name `time` is the record's own timestamp)
--   host      "LabSZ"
--   pid       24200       integer
--   content   the message, without trailing blanks
-- A line from another program, or one that does not match, is left
-- unchanged.
--
-- Checked against the Loghub OpenSSH sample: on all 2,000 lines these
-- fields equal the columns of OpenSSH_2k.log_structured.csv, which names
-- them Date (the month), Day, Time, Component (the host), Pid and Content.

-- syslog pads a one-digit day with a second blank ("Dec  9"), hence %s+.
-- Month, day and time together are the record's time: syslog style, with
-- no year (lugger.parse_time's "syslog": this year, or the last one when
-- that would be more than a day ahead).
local LINE = lugger.regex([[^\s*(?<time>(?<month>[A-Za-z]+)\s+(?<day:int>\d+)\s+(?<log_time>\d+:\d+:\d+))\s+(?<host>\S+)\s+sshd\[(?<pid:int>\d+)\]:\s+(?<content>.*?)\s*$]],
                          { flags = "s", types = { time = "syslog" } })

function process(rec)
  rec:parse_regex(LINE)
end
