-- Parses log4j/logback lines of a Java service:
--   2024-05-01 12:00:00.123 ERROR [main] com.example.Orders - payment failed
-- into log_time, level, thread, logger and message. A stack trace that
-- multiline grouped into one record gets `exception`, the class it starts
-- with ("java.lang.IllegalStateException"): either the trace alone (the
-- "java" preset: exception line, "\tat" frames, "Caused by:", "... N
-- more") or the log line with its trace (a `start` rule on the timestamp).
local HEAD = "^(%d%d%d%d%-%d%d%-%d%d[ T]%d%d:%d%d:%d%d[.,]%d+)%s+(%u+)%s+%[([^%]]*)%]%s+(%S+)%s+%-%s?(.*)$"
local EXC = "^([%a_$][%w_$]*%.[%w_$%.]+)[:\n]"

local function exception(text)
  return text:match(EXC) or text:match("^([%a_$][%w_$]*%.[%w_$%.]+)$") or
         text:match('^Exception in thread "[^"]*" ([%w_$%.]+)')
end

function process(rec)
  local body = rec.body
  local first, rest = body:match("^([^\n]*)\n?(.*)$")
  local t, level, thread, logger, msg = first:match(HEAD)
  if t then
    rec.log_time, rec.level, rec.thread, rec.logger = t, level, thread, logger
    rec.message = msg
    if rest ~= "" then rec.exception = exception(rest) end
  else
    rec.exception = exception(body)
  end
end
