-- lugger.busted: runs busted inside the lugger binary, for users' specs of
-- their filters (`lugger lua --busted [busted options] [SPEC...]`), so that
-- lugger.testing drives the real C runtime through ffi.C.
--
-- busted itself is not embedded: it comes from the system (Debian's
-- lua-busted, or LuaRocks for Lua 5.1). The lugger modules are loaded
-- before busted starts, because busted unloads what a spec file loaded
-- when the file ends, and the FFI types they declare can exist only once
-- per Lua state.
local M = {}

M.modules = { "batch", "json", "log", "mem", "record", "sandbox", "fluentbit",
              "driver", "version", "sample", "testing", "repl" }

-- Runs busted with the global `arg` as its command line. Exits 1 when a
-- spec fails or busted cannot be loaded.
function M.run()
  for _, m in ipairs(M.modules) do
    require("lugger." .. m)
  end
  local found, runner = pcall(require, "busted.runner")
  if not found then
    io.stderr:write("lugger lua --busted: busted is not installed (Debian: apt-get install ",
                    "lua-busted; or luarocks --lua-version 5.1 install busted)\n",
                    tostring(runner), "\n")
    os.exit(1)
  end
  -- On failures busted (standalone = false, Lua 5.1) raises a nil error
  -- to stop; that becomes exit status 1 without a traceback.
  local ok, err = pcall(runner, { standalone = false })
  if not ok then
    if err ~= nil then io.stderr:write(tostring(err), "\n") end
    os.exit(1)
  end
end

return M
