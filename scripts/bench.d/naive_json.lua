-- The JSON baseline: a naive LuaJIT loop over the same JSON lines with
-- Debian's lua-cjson, decoding each line and applying the same drop rule
-- as json_parse.lua, with no output.
local cjson = require("cjson")
local path = assert(arg[1], "usage: luajit naive_json.lua FILE")
local decode, pcall = cjson.decode, pcall
local kept, dropped, bad = 0, 0, 0
for line in io.lines(path) do
  local ok, t = pcall(decode, line)
  if not ok or type(t) ~= "table" then
    bad = bad + 1
  elseif t.level == "debug" then
    dropped = dropped + 1
  else
    kept = kept + 1
  end
end
io.stderr:write(string.format("naive json: %d kept, %d dropped, %d bad\n", kept, dropped, bad))
