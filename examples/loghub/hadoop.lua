-- hadoop.lua - parses Hadoop MapReduce / YARN (log4j) log lines.
--
--   2015-10-18 18:01:47,978 INFO [main] org.apache.hadoop.mapreduce.v2.app.MRAppMaster: Created ...
--   <date> <time,millis> <level> [<thread>] <component>: <content>
--
-- Fields set on a record whose body matches (the body itself is kept):
--   date       "2015-10-18"
--   log_time   "18:01:47,978"  (the name `time` is the record's own
--                               timestamp)
--   level      "INFO", "WARN", "ERROR", "FATAL"
--   thread     "main", "LeaseRenewer:msrabi@msra-sa-41:9000", ...
--   component  the logger, e.g. "org.apache.hadoop.ipc.Client"
--   content    the message, without trailing blanks
-- The record's time is the line's date and time, taken as UTC (the logs
-- carry no zone).
-- A line that does not match is left unchanged.
--
-- Checked against the Loghub Hadoop sample: on all 2,000 lines these fields
-- equal the columns of Hadoop_2k.log_structured.csv, which names them
-- Date, Time, Level, Process (the thread), Component and Content.

-- The thread name ends at the first "] " and may hold colons; the logger
-- ends at the first ": " after it.
-- The date and time (with milliseconds after a comma) together are the
-- record's time.
local LINE = lugger.regex([[^\s*(?<time>(?<date>\S+)\s+(?<log_time>\S+))\s+(?<level>[A-Z]+)\s+\[(?<thread>.*?)\]\s+(?<component>.*?):\s+(?<content>.*?)\s*$]],
                          { flags = "s", types = { time = "%Y-%m-%d %H:%M:%S,%f" } })

function process(rec)
  rec:parse_regex(LINE)
end
