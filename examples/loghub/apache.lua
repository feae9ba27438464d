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
-- A line that does not match is left unchanged.
--
-- Checked against the Loghub Apache sample: on all 2,000 lines these fields
-- equal the columns Time, Level and Content of Apache_2k.log_structured.csv.

-- Each bracket closes at the first "]" that a blank follows.
local LINE = "^%s*%[(.-)%]%s+%[(.-)%]%s+(.-)%s*$"

function process(rec)
  local stamp, level, content = rec.body:match(LINE)
  if not stamp then return end
  rec.log_time = stamp
  rec.level = level
  rec.content = content
end
