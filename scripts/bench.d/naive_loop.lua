-- The baseline: a naive single-process LuaJIT loop over the same CRI file,
-- doing the same CRI split (P chunks joined per stream until F) and the
-- same nginx parse and drop as nginx_parse.lua, with no output.
local path = assert(arg[1], "usage: luajit naive_loop.lua FILE")
local match, tonumber, find = string.match, tonumber, string.find
local CRI = "^(%S+) (%S+) ([PF]) (.*)$"
local COMBINED = '^(%S+) %S+ (%S+) %[([^%]]+)%] "(%S+) (%S+) ([^"]*)" (%d+) (%d+) "([^"]*)" "([^"]*)"'
local partial = { stdout = {}, stderr = {} }
local kept, dropped, bad, n = 0, 0, 0, 0
local fields = {}
for line in io.lines(path) do
  n = n + 1
  local ts, stream, tag, msg = match(line, CRI)
  if not ts then
    bad = bad + 1
  else
    local p = partial[stream]
    if tag == "P" then
      p[#p + 1] = msg
    else
      if #p > 0 then
        p[#p + 1] = msg
        msg = table.concat(p)
        partial[stream] = {}
      end
      local addr, user, tl, method, rpath, proto, status, bytes, ref, ua =
        match(msg, COMBINED)
      if addr then
        status = tonumber(status)
        if status == 200 and find(rpath, "^/health") then
          dropped = dropped + 1
        else
          fields.remote_addr, fields.time_local, fields.method = addr, tl, method
          fields.path, fields.status = rpath, status
          fields.body_bytes_sent, fields.referer, fields.user_agent =
            tonumber(bytes), ref, ua
          kept = kept + 1
        end
      else
        kept = kept + 1
      end
    end
  end
end
io.stderr:write(string.format("naive: %d lines, %d kept, %d dropped, %d malformed\n",
  n, kept, dropped, bad))
