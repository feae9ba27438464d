-- lugger.mem: the `mem` area of src/pipeline/lg_ffi.h: the memory limit of the
-- Lua state (lg_lua_opts_t.memory_limit).
local ffi = require("ffi")

local M = {}

M.cdef = [[
int lg_ffi_mem_headroom(int on);
]]
ffi.cdef(M.cdef)

local C = ffi.C

-- Lets the driver exceed the state's memory limit by a small headroom
-- while it records a failure (a script that ran out of memory usually
-- still holds it), or ends that.
function M.headroom(on)
  C.lg_ffi_mem_headroom(on and 1 or 0)
end

return M
