-- nginx_check.lua - table tests of examples/nginx/nginx.lua: the fields of
-- each kind of combined-format line, and the drop / route / keep_body
-- parameters.
--
-- Usage (from the source tree root, or give the script's path):
--   lugger lua tests/examples/nginx_check.lua [examples/nginx/nginx.lua]
-- Prints each failure and a summary; exits 1 if any case fails.

local common = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")
local script = arg[1] or "examples/nginx/nginx.lua"

local failures, cases = 0, 0

local function fail(name, msg)
  failures = failures + 1
  io.write(("FAIL %s: %s\n"):format(name, msg))
end

local function show(v)
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) == "table" then
    local parts = {}
    for _, x in ipairs(v) do parts[#parts + 1] = show(x) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return tostring(v)
end

-- Runs `line` through a fresh copy of the script with `params` and checks
-- that the record ends with exactly the fields of `want` (body included,
-- unless want.body == false meaning absent) and the verdict `verdict`:
-- "keep", "drop" or a route list.
local function case(name, params, line, want, verdict)
  cases = cases + 1
  local ok, env = pcall(common.load_script, script, params)
  if not ok then return fail(name, "load: " .. tostring(env)) end
  local ok2, st = pcall(common.process, env, line)
  if not ok2 then return fail(name, "process: " .. tostring(st)) end
  local expect = {}
  for k, v in pairs(want) do expect[k] = v end
  if expect.body == nil then expect.body = line end
  if expect.body == false then expect.body = nil end
  for k, v in pairs(expect) do
    local got = st.fields[k]
    if got ~= v or type(got) ~= type(v) then
      fail(name, ("field %s: expected %s, got %s"):format(k, show(v), show(got)))
    end
  end
  for k, v in pairs(st.fields) do
    if expect[k] == nil then fail(name, ("unexpected field %s = %s"):format(k, show(v))) end
  end
  local got_verdict = st.dropped and "drop" or (st.routes and show(st.routes)) or "keep"
  local want_verdict = type(verdict) == "table" and show(verdict) or (verdict or "keep")
  if got_verdict ~= want_verdict then
    fail(name, ("verdict: expected %s, got %s"):format(want_verdict, got_verdict))
  end
end

local UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
local T = "01/May/2024:12:00:01 +0000"

case("full line", nil,
  '203.0.113.7 - alice [' .. T .. '] "GET /api/items?id=4&x=1 HTTP/1.1" 200 512 "https://example.com/" "' .. UA .. '"',
  { remote_addr = "203.0.113.7", remote_user = "alice", time_local = T, method = "GET",
    path = "/api/items", query = "id=4&x=1", protocol = "HTTP/1.1", status = 200,
    body_bytes_sent = 512, referer = "https://example.com/", user_agent = UA })

case("dashes are absent values, IPv6 client", nil,
  '2001:db8::1 - - [' .. T .. '] "HEAD / HTTP/2.0" 304 0 "-" "-"',
  { remote_addr = "2001:db8::1", time_local = T, method = "HEAD", path = "/",
    protocol = "HTTP/2.0", status = 304, body_bytes_sent = 0 })

case("HTTP/0.9 request has no protocol", nil,
  '10.1.2.3 - - [' .. T .. '] "GET /" 200 612 "-" "-"',
  { remote_addr = "10.1.2.3", time_local = T, method = "GET", path = "/",
    status = 200, body_bytes_sent = 612 })

case("TLS handshake on the HTTP port keeps the raw request", nil,
  '10.1.2.3 - - [' .. T .. '] "\\x16\\x03\\x01\\x02\\x00\\x01" 400 157 "-" "-"',
  { remote_addr = "10.1.2.3", time_local = T, request = "\\x16\\x03\\x01\\x02\\x00\\x01",
    status = 400, body_bytes_sent = 157 })

case("empty request", nil,
  '10.1.2.3 - - [' .. T .. '] "-" 400 0 "-" "-"',
  { remote_addr = "10.1.2.3", time_local = T, status = 400, body_bytes_sent = 0 })

case("escaped quote in the user agent", nil,
  '10.1.2.3 - - [' .. T .. '] "GET /a HTTP/1.1" 200 1 "-" "bot \\x22x\\x22 1.0"',
  { remote_addr = "10.1.2.3", time_local = T, method = "GET", path = "/a",
    protocol = "HTTP/1.1", status = 200, body_bytes_sent = 1, user_agent = "bot \\x22x\\x22 1.0" })

case("extra fields after the user agent are ignored", nil,
  '10.1.2.3 - - [' .. T .. '] "GET /a HTTP/1.1" 200 1 "-" "ua" "198.51.100.9"',
  { remote_addr = "10.1.2.3", time_local = T, method = "GET", path = "/a",
    protocol = "HTTP/1.1", status = 200, body_bytes_sent = 1, user_agent = "ua" })

case("truncated line is left unchanged", { drop_health = true, errors_output = "errors" },
  '10.1.2.3 - - [' .. T .. '] "GET /api/v1/items?page=3 HTT', {})

case("not an access-log line is left unchanged", nil,
  '2024/05/01 12:00:01 [error] 7#7: *1 open() "/x" failed (2: No such file or directory)', {})

local PROBE = '10.0.0.1 - - [' .. T .. '] "GET /healthz HTTP/1.1" 200 2 "-" "kube-probe/1.29"'
local PROBE_FIELDS = { remote_addr = "10.0.0.1", time_local = T, method = "GET", path = "/healthz",
  protocol = "HTTP/1.1", status = 200, body_bytes_sent = 2, user_agent = "kube-probe/1.29" }

case("probes are kept by default", nil, PROBE, PROBE_FIELDS, "keep")
case("drop_health drops a 200 probe", { drop_health = true }, PROBE, PROBE_FIELDS, "drop")
case("drop_health keeps a failing probe", { drop_health = true },
  '10.0.0.1 - - [' .. T .. '] "GET /healthz HTTP/1.1" 503 2 "-" "kube-probe/1.29"',
  { remote_addr = "10.0.0.1", time_local = T, method = "GET", path = "/healthz",
    protocol = "HTTP/1.1", status = 503, body_bytes_sent = 2, user_agent = "kube-probe/1.29" },
  "keep")
case("health_path changes the prefix", { drop_health = true, health_path = "/ready" },
  PROBE, PROBE_FIELDS, "keep")

local E500 = '10.1.2.3 - - [' .. T .. '] "POST /api HTTP/1.1" 502 0 "-" "curl/8.5.0"'
local E500_FIELDS = { remote_addr = "10.1.2.3", time_local = T, method = "POST", path = "/api",
  protocol = "HTTP/1.1", status = 502, body_bytes_sent = 0, user_agent = "curl/8.5.0" }
case("5xx not routed by default", nil, E500, E500_FIELDS, "keep")
case("errors_output routes 5xx", { errors_output = "errors" }, E500, E500_FIELDS, { "errors" })
case("errors_output as a list", { errors_output = { "out", "errors" } }, E500, E500_FIELDS,
  { "out", "errors" })
case("errors_output leaves 4xx alone", { errors_output = "errors" },
  '10.1.2.3 - - [' .. T .. '] "GET /nope HTTP/1.1" 404 9 "-" "-"',
  { remote_addr = "10.1.2.3", time_local = T, method = "GET", path = "/nope",
    protocol = "HTTP/1.1", status = 404, body_bytes_sent = 9 }, "keep")

local NOBODY = {}
for k, v in pairs(E500_FIELDS) do NOBODY[k] = v end
NOBODY.body = false
case("keep_body = false removes body", { keep_body = false }, E500, NOBODY, "keep")

-- Wrong parameter types fail init, so `lugger check` reports them.
for _, p in ipairs({ { drop_health = "yes" }, { health_path = 1 }, { errors_output = 5 },
                     { keep_body = 0 } }) do
  cases = cases + 1
  local ok, err = pcall(common.load_script, script, p)
  if ok then
    local k = next(p)
    fail("bad params", "init accepted " .. k .. " = " .. show(p[k]))
  elseif not tostring(err):find("params%.") then
    fail("bad params", "error does not name the parameter: " .. tostring(err))
  end
end

io.write(("nginx_check: %s: %d cases, %d failures\n"):format(script, cases, failures))
os.exit(failures == 0 and 0 or 1)
