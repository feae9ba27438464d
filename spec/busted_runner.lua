-- Runs the busted specs inside the lugger binary, so that they exercise the
-- real C through ffi.C and the embedded lua/lugger modules:
--   lugger lua spec/busted_runner.lua [busted options] spec
-- (CTest runs it from the source directory.)
--
-- The lugger modules are loaded before busted starts: busted unloads the
-- modules a spec file loaded when the file ends, and the FFI types they
-- declare can exist only once per Lua state.
package.path = "spec/?.lua;" .. package.path
for _, m in ipairs({ "batch", "json", "log", "mem", "record", "sandbox", "driver", "version" }) do
  require("lugger." .. m)
end

-- On failures busted (standalone = false, Lua 5.1) raises a nil error to
-- stop; turn that into exit status 1 without a traceback.
local ok, err = pcall(require("busted.runner"), { standalone = false })
if not ok then
  if err ~= nil then io.stderr:write(tostring(err), "\n") end
  os.exit(1)
end
