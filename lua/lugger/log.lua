-- lugger.log: lugger's own log (src/core/lg_log.h: JSON lines on stderr) for
-- the runtime and for scripts' lugger.log().
local ffi = require("ffi")

local M = {}

M.cdef = [[
int lg_ffi_log_write(int level, const char *component, size_t clen, const char *msg, size_t mlen);
]]
ffi.cdef(M.cdef)

local C = ffi.C

M.levels = { debug = 0, info = 1, warn = 2, error = 3 }

-- Writes one log line. `level` is a name from M.levels; `component` names
-- the area ("pipeline.web"); `msg` is converted with tostring.
function M.write(level, component, msg)
  local l = M.levels[level]
  if not l then
    error("unknown log level '" .. tostring(level) .. "'", 2)
  end
  msg = tostring(msg)
  C.lg_ffi_log_write(l, component, #component, msg, #msg)
end

return M
