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
-- A line that does not match is left unchanged.
--
-- Checked against the Loghub Hadoop sample: on all 2,000 lines these fields
-- equal the columns of Hadoop_2k.log_structured.csv, which names them
-- Date, Time, Level, Process (the thread), Component and Content.

-- The thread name ends at the first "] " and may hold colons; the logger
-- ends at the first ": " after it.
local LINE = "^%s*(%S+)%s+(%S+)%s+(%u+)%s+%[(.-)%]%s+(.-):%s+(.-)%s*$"

function process(rec)
  local date, clock, level, thread, component, content = rec.body:match(LINE)
  if not date then return end
  rec.date = date
  rec.log_time = clock
  rec.level = level
  rec.thread = thread
  rec.component = component
  rec.content = content
end
