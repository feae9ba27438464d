-- nginx in a Kubernetes pod: access lines (the "combined" format) on
-- stdout, error-log lines on stderr. Access lines become typed fields and
-- stay on the pipeline's default output; stderr lines become fields too
-- and go to the output "error_log". Lines that do not parse keep their
-- body and go where their stream goes.
--
--   lugger test examples/kafka/nginx_cri.lua SAMPLE --format cri --routes

-- $remote_addr - $remote_user [$time_local] "$request" $status
-- $body_bytes_sent "$http_referer" "$http_user_agent"
local ACCESS = '^(%S+) %- (%S+) %[([^%]]+)%] "([^"]*)" (%d+) (%d+) "([^"]*)" "([^"]*)"'
-- 2026/11/21 10:00:00 [error] 29#29: *1 message, client: ..., server: ...
local ERROR = "^(%d%d%d%d/%d%d/%d%d %d%d:%d%d:%d%d) %[(%a+)%] (%d+)#(%d+): (.*)$"

local function dash(s)
  if s == "-" then return nil end
  return s
end

local function access(rec)
  local addr, user, tlocal, request, status, bytes, referer, agent =
    rec.body:match(ACCESS)
  if not addr then return end
  rec.remote_addr = addr
  rec.remote_user = dash(user)
  rec.time_local = tlocal
  local method, path, proto = request:match("^(%S+) (%S+) (%S+)$")
  rec.method, rec.path, rec.protocol = method, path, proto
  if not method then rec.request = request end
  rec.status = tonumber(status)
  rec.body_bytes_sent = tonumber(bytes)
  rec.http_referer = dash(referer)
  rec.http_user_agent = dash(agent)
end

local function error_line(rec)
  local t, level, pid, tid, msg = rec.body:match(ERROR)
  if not t then return end
  rec.error_time, rec.level = t, level
  rec.pid, rec.tid = tonumber(pid), tonumber(tid)
  local conn, rest = msg:match("^%*(%d+) (.*)$")
  if conn then
    rec.connection = tonumber(conn)
    msg = rest
  end
  -- nginx appends the request's context: ", client: A, server: B,
  -- request: "...", upstream: "...", host: "..."".
  local head, ctx = msg:match("^(.-), (client: .*)$")
  if head then
    msg = head
    rec.client = ctx:match("^client: ([^,]+)")
    rec.server = ctx:match(", server: ([^,]*)")
    rec.request = ctx:match(', request: "([^"]*)"')
    rec.upstream = ctx:match(', upstream: "([^"]*)"')
    rec.host = ctx:match(', host: "([^"]*)"')
  end
  rec.message = msg
end

function process(rec)
  if rec["log.iostream"] == "stderr" then
    error_line(rec)
    return "error_log"
  end
  access(rec)
end
