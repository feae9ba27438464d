-- linux.lua - parses classic syslog lines (RFC 3164 style, as written by
-- sysklogd to /var/log/messages).
--
--   Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; ...
--   Jun 15 04:06:20 combo logrotate: ALERT exited abnormally with [1]
--   <month> <day> <hh:mm:ss> <host> <program>[<pid>]: <content>
--
-- Fields set on a record whose body matches (the body itself is kept):
--   month      "Jun"
--   day        14          integer
--   log_time   "15:16:01"  (the name `time` is the record's own timestamp)
--   host       "combo"
--   component  "sshd(pam_unix)", "kernel", "syslogd 1.4.1", "-- root" ...
--              (the program tag: it may hold blanks)
--   pid        19939       integer; absent when the tag has no [pid]
--   content    the message, without trailing blanks
-- A line that does not match is left unchanged.
--
-- Checked against the Loghub Linux sample: on all 2,000 lines these fields
-- equal the columns of Linux_2k.log_structured.csv, which names them
-- Month, Date (the day), Time, Level (the host), Component, PID (empty
-- when absent) and Content.

local HEAD = "^%s*(%a+)%s+(%d+)%s+(%d+:%d+:%d+)%s+(%S+)%s+()"

-- The tag is the shortest text that a "[pid]: " or a ": " ends: scan the
-- candidates "[" and ":" from left to right and take the first that fits.
-- A single pattern cannot say this, because Lua patterns have no optional
-- groups.
local function split_tag(s, from)
  local pos = from
  while true do
    local at = s:find("[%[:]", pos)
    if not at then return nil end
    if s:byte(at) == 58 then -- ":"
      local content = s:match("^:%s+(.-)%s*$", at)
      if content then return s:sub(from, at - 1), nil, content end
    else
      local pid, content = s:match("^%[(.-)%]:%s+(.-)%s*$", at)
      if pid then return s:sub(from, at - 1), pid, content end
    end
    pos = at + 1
  end
end

function process(rec)
  local body = rec.body
  local month, day, clock, host, rest = body:match(HEAD)
  if not month then return end
  local component, pid, content = split_tag(body, rest)
  if not component then return end
  rec.month = month
  rec.day = tonumber(day)
  rec.log_time = clock
  rec.host = host
  rec.component = component
  rec.pid = tonumber(pid) -- nil (absent) when there is no [pid]
  rec.content = content
end
