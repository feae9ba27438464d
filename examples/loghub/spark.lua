-- spark.lua - parses Apache Spark (log4j) driver and executor log lines.
--
--   17/06/09 20:10:40 INFO spark.SecurityManager: Changing view acls to: yarn,curi
--   <yy/MM/dd> <HH:mm:ss> <level> <component>: <content>
--
-- Fields set on a record whose body matches (the body itself is kept):
--   date       "17/06/09"
--   log_time   "20:10:40"  (the name `time` is the record's own timestamp)
--   level      "INFO", "WARN", "ERROR", ...
--   component  "spark.SecurityManager" (the logger)
--   content    the message, without trailing blanks
-- A line that does not match (e.g. a stack-trace line) is left unchanged.
--
-- Checked against the Loghub Spark sample: on all 2,000 lines these fields
-- equal the columns Date, Time, Level, Component and Content of
-- Spark_2k.log_structured.csv.

-- The logger name ends at the first ": "; the message may hold more.
-- The date and time together are the record's time.
local LINE = lugger.regex([[^\s*(?<time>(?<date>\S+)\s+(?<log_time>\S+))\s+(?<level>[A-Z]+)\s+(?<component>.*?):\s+(?<content>.*?)\s*$]],
                          { flags = "s", types = { time = "%y/%m/%d %H:%M:%S" } })

function process(rec)
  rec:parse_regex(LINE)
end
