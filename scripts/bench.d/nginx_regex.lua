-- Benchmark filter (d): the same parse and drop as nginx_parse.lua (c),
-- with the C helpers: rec:parse_regex sets the eight fields (status and
-- body_bytes_sent as integers) and the record's time from $time_local (the
-- group "time", nested in time_local so that field is kept as in (c));
-- health probes answered 200 are dropped, body removed.
local COMBINED = lugger.regex([=[^(?<remote_addr>\S+) \S+ (?<remote_user>\S+) \[(?<time_local>(?<time:nginx>[^\]]+))\] "(?<method>\S+) (?<path>\S+) [^"]*" (?<status:int>\d+) (?<body_bytes_sent:int>\d+) "(?<referer>[^"]*)" "(?<user_agent>[^"]*)"]=])
local sub = string.sub

function process(rec)
  if not rec:parse_regex(COMBINED) then return end
  -- (c)'s find(path, "^/health") as a prefix compare: string.find with a
  -- pattern is not JIT-compiled (the trace stitches around it).
  if rec.status == 200 and sub(rec.path, 1, 7) == "/health" then return false end
  rec.body = nil
end
