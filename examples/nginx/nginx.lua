-- nginx.lua - parses nginx access-log lines in the predefined "combined"
-- format:
--
--   $remote_addr - $remote_user [$time_local] "$request" $status
--   $body_bytes_sent "$http_referer" "$http_user_agent"
--
--   203.0.113.7 - alice [01/May/2024:12:00:01 +0000] "GET /api/items?id=4 HTTP/1.1" 200 512 "-" "curl/8.5.0"
--
-- Fields set on a record whose body matches (the body itself is kept
-- unless params.keep_body is false):
--   remote_addr      "203.0.113.7" (IPv4 or IPv6)
--   remote_user      "alice"; absent when nginx wrote "-"
--   time_local       "01/May/2024:12:00:01 +0000", as written
--   method           "GET"
--   path             "/api/items" (the request target before any "?")
--   query            "id=4"; absent when the target has no "?"
--   protocol         "HTTP/1.1"; absent for an HTTP/0.9 request ("GET /")
--   request          the raw request text, set only when it is not
--                    "METHOD TARGET [PROTOCOL]" (e.g. a TLS handshake sent
--                    to a plain-HTTP port); absent when nginx wrote "-"
--   status           200, integer
--   body_bytes_sent  512, integer
--   referer          absent when nginx wrote "-"
--   user_agent       absent when nginx wrote "-"
-- nginx escapes '"', '\' and non-printable bytes in these values as \xHH;
-- the fields keep that text as written. Extra fields that a log_format
-- appends after the user agent (e.g. "$http_x_forwarded_for") are ignored.
-- A line that does not match is left unchanged: no field is set, nothing
-- is dropped.
--
-- Parameters, from the script entry of the pipeline (all optional):
--   drop_health = true     drop successful health probes: status 200 and a
--                          path that starts with health_path. Kubelet and
--                          load-balancer probes are often most of the lines
--                          and carry no information. Default false.
--   health_path = "/health"  the prefix that marks a probe (also matches
--                          "/healthz"). Default "/health".
--   errors_output = "errors"  route records with status >= 500 to this
--                          output instead of the pipeline's outputs. A list
--                          such as { "out", "errors" } sends them to both.
--                          Default: not routed.
--   keep_body = false      remove body from parsed records once its fields
--                          are extracted (smaller output). Default true.

local drop_health = false
local health_path = "/health"
local errors_output = nil
local keep_body = true

local function check_type(params, key, want)
  local v = params[key]
  if v ~= nil and type(v) ~= want then
    error(("params.%s must be a %s, not a %s"):format(key, want, type(v)), 0)
  end
  return v
end

function init(params)
  params = params or {}
  if check_type(params, "drop_health", "boolean") ~= nil then
    drop_health = params.drop_health
  end
  health_path = check_type(params, "health_path", "string") or health_path
  if check_type(params, "keep_body", "boolean") ~= nil then
    keep_body = params.keep_body
  end
  local eo = params.errors_output
  if eo ~= nil and type(eo) ~= "string" and type(eo) ~= "table" then
    error("params.errors_output must be an output name or a list of names", 0)
  end
  errors_output = eo
end

-- nginx writes '"' inside values as \x22, so a quoted value is exactly the
-- bytes up to the next '"'. remote_user is the only value that may hold a
-- blank unescaped, so it runs lazily up to " [".
local LINE = '^(%S+) %- (.-) %[([^%]]*)%] "([^"]*)" (%d%d%d) (%d+) "([^"]*)" "([^"]*)"'

-- "-" is how nginx writes an empty value.
local function value(s)
  if s == "-" then return nil end
  return s
end

function process(rec)
  local addr, user, tlocal, request, status, bytes, referer, agent = rec.body:match(LINE)
  if not addr then return end

  rec.remote_addr = addr
  rec.remote_user = value(user)
  rec.time_local = tlocal
  local method, target, protocol = request:match("^(%S+) (%S+) (%S+)$")
  if not method then
    method, target = request:match("^(%S+) (%S+)$") -- HTTP/0.9
  end
  local path
  if method then
    rec.method, rec.protocol = method, protocol
    local q = target:find("?", 1, true)
    if q then
      path = target:sub(1, q - 1)
      rec.query = target:sub(q + 1)
    else
      path = target
    end
    rec.path = path
  else
    rec.request = value(request)
  end
  local code = tonumber(status)
  rec.status = code
  rec.body_bytes_sent = tonumber(bytes)
  rec.referer = value(referer)
  rec.user_agent = value(agent)
  if not keep_body then rec.body = nil end

  if drop_health and code == 200 and path
      and path:sub(1, #health_path) == health_path then
    return false
  end
  if errors_output and code >= 500 then
    return errors_output
  end
end
