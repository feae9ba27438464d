-- luacheck (Debian lua-check) over lua/ and spec/: run by scripts/test
-- and by the ctest entry "luacheck".
std = "luajit"
max_line_length = 120
-- FFI declarations and expected texts are long strings; they stay whole.
max_string_line_length = false

files["spec"] = {
  std = "+busted",
  -- Expected record lines are written out whole.
  max_line_length = 180,
}
-- Methods need not use self.
self = false
