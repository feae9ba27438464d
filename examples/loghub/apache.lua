-- apache.lua - parses Apache httpd error-log lines (the 2.0 format).
--
--   [Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok /etc/httpd/...
--   [<timestamp>] [<level>] <content>
--
-- Fields set on a record whose body matches (the body itself is kept):
--   log_time  "Sun Dec 04 04:47:44 2005"  as written (the name `time` is
--                                          the record's own timestamp)
--   level     "notice", "error", ...
--   content   the message, without trailing blanks
-- The record's time is log_time, taken as UTC (the logs carry no zone).
-- A line that does not match is left unchanged.
--
-- Checked against the Loghub Apache sample: on all 2,000 lines these fields
-- equal the columns Time, Level and Content of Apache_2k.log_structured.csv.

-- Each bracket closes at the first "]" that a blank follows.
-- The text in the first brackets is the record's time too (the group
-- "time" nested in log_time).
local LINE = lugger.regex([[^\s*\[(?<log_time>(?<time>.*?))\]\s+\[(?<level>.*?)\]\s+(?<content>.*?)\s*$]],
                          { flags = "s", types = { time = "%a %b %d %H:%M:%S %Y" } })

function process(rec)
  rec:parse_regex(LINE)
end
