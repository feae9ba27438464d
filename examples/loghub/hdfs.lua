-- hdfs.lua - parses Hadoop HDFS (DataNode / NameNode) log lines.
--
--   081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 ...
--   <date> <time> <pid> <level> <component>: <content>
--
-- Fields set on a record whose body matches (the body itself is kept):
--   date       "081109"   yymmdd, a string: its leading zero matters
--   log_time   "203615"   hhmmss, a string for the same reason (the name
--                          `time` is the record's own timestamp)
--   pid        148        integer
--   level      "INFO"
--   component  "dfs.DataNode$PacketResponder"
--   content    the message after "<component>: ", without trailing blanks
-- The record's time is the line's date and time, taken as UTC (the logs
-- carry no zone).
-- A line that does not match is left unchanged.
--
-- Checked against the Loghub HDFS sample: on all 2,000 lines these fields
-- equal the columns Date, Time, Pid, Level, Component and Content of
-- HDFS_2k.log_structured.csv (tests/integration/test_examples.py).

-- Blanks around the line are not part of any field, and the component
-- ends at the first ": " (Java class names hold no colon). The date and
-- time, together, are the record's time (the group "time").
local LINE = lugger.regex([[^\s*(?<time>(?<date>\d+)\s+(?<log_time>\d+))\s+(?<pid:int>\d+)\s+(?<level>[A-Z]+)\s+(?<component>.*?):\s+(?<content>.*?)\s*$]],
                          { flags = "s", types = { time = "%y%m%d %H%M%S" } })

function process(rec)
  rec:parse_regex(LINE)
end
