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
--   time_local       "01/May/2024:12:00:01 +0000", as written; it is also
--                    the record's time (2024-05-01T12:00:01Z)
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
-- blank unescaped, so it runs lazily up to " [". "-" is how nginx writes an
-- empty value: the alternatives (?:-|(?<x>...)) leave those fields out. The
-- request is METHOD TARGET [PROTOCOL] with single blanks, else it is kept
-- whole in `request`. The group "time" (inside time_local) is the record's
-- time, read in nginx's format.
local LINE = lugger.regex([=[^(?<remote_addr>\S+) - (?:-|(?<remote_user>.*?)) \[(?<time_local>(?<time:nginx>[^\]]*))\] "(?:(?<method>[^ "]+) (?=[^ "])(?<path>[^ "?]*)(?:\?(?<query>[^ "]*))?(?: (?<protocol>[^ "]+))?|-|(?<request>[^"]*))" (?<status:int>\d{3}) (?<body_bytes_sent:int>\d+) "(?:-|(?<referer>[^"]*))" "(?:-|(?<user_agent>[^"]*))"]=], "s")

function process(rec)
  if not rec:parse_regex(LINE) then return end
  if not keep_body then rec.body = nil end
  local status = rec.status
  if drop_health and status == 200 then
    local path = rec.path
    if path and path:sub(1, #health_path) == health_path then return false end
  end
  if errors_output and status >= 500 then
    return errors_output
  end
end
