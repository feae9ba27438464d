-- Benchmark filter (c): parse an nginx "combined" access line into eight
-- typed fields, drop the body, and drop health probes answered with 200.
local match, tonumber = string.match, tonumber
local find = string.find

-- $remote_addr - $remote_user [$time_local] "$request" $status
-- $body_bytes_sent "$http_referer" "$http_user_agent"
local COMBINED = '^(%S+) %S+ (%S+) %[([^%]]+)%] "(%S+) (%S+) ([^"]*)" (%d+) (%d+) "([^"]*)" "([^"]*)"'

function process(rec)
  local addr, user, tl, method, path, proto, status, bytes, ref, ua =
    match(rec.body, COMBINED)
  if not addr then return end
  status = tonumber(status)
  if status == 200 and find(path, "^/health") then return false end
  rec.remote_addr = addr
  rec.time_local = tl
  rec.method = method
  rec.path = path
  rec.status = status
  rec.body_bytes_sent = tonumber(bytes)
  rec.referer = ref
  rec.user_agent = ua
  rec.body = nil
end
