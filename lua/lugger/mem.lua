-- lugger.mem: the `mem` area of src/pipeline/lg_ffi.h: the memory limit of the
-- Lua state (lg_lua_opts_t.memory_limit).
local ffi = require("ffi")

local M = {}

M.cdef = [[
int lg_ffi_mem_headroom(int on);
]]
ffi.cdef(M.cdef)

-- Resolved now, while the state has memory: ffi.C resolves a symbol at
-- its first use, which allocates (the function's cdata, a cache slot), and
-- the first use comes when a script has just run the state out of memory.
-- That allocation then failed outside the driver's xpcall, and the run
-- ended as a driver failure (every record of the batch failed, the full
-- state kept) instead of failing the one record and recreating the state.
local lg_ffi_mem_headroom = ffi.C.lg_ffi_mem_headroom

-- Lets the driver exceed the state's memory limit by a small headroom
-- while it records a failure (a script that ran out of memory usually
-- still holds it), or ends that.
function M.headroom(on)
  lg_ffi_mem_headroom(on and 1 or 0)
end

return M
