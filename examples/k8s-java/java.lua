-- Parses the first line of a log4j/logback record:
--   2024-05-01 12:00:00.123 ERROR [main] com.example.Orders - payment failed
-- into log_time, level, thread, logger and message. A stack trace grouped
-- into the record (multiline = "java") stays in body, and `exception` gets
-- the class of the exception it starts with ("java.lang.IllegalStateException").
local HEAD = "^(%d%d%d%d%-%d%d%-%d%d[ T]%d%d:%d%d:%d%d[.,]%d+)%s+(%u+)%s+%[([^%]]*)%]%s+(%S+)%s+%-%s?(.*)$"

function process(rec)
  local body = rec.body
  local first, rest = body:match("^([^\n]*)\n?(.*)$")
  local t, level, thread, logger, msg = first:match(HEAD)
  if not t then return end
  rec.log_time, rec.level, rec.thread, rec.logger = t, level, thread, logger
  rec.message = msg
  -- The trace's first line: "<class>: <message>" or just "<class>".
  local exc = rest:match("^([%a_$][%w_$%.]*)[:\n]") or rest:match("^([%a_$][%w_$%.]*)$")
  if exc and exc:find(".", 1, true) then rec.exception = exc end
end
