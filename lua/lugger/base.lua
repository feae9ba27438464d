-- lugger.base: the statuses lg_ffi_* functions return, by name, and one
-- message per status, so the wrappers compare and explain them in one
-- way instead of copying errno numbers (STYLE.md rule 2: 0 is success,
-- a negative errno an error; src/pipeline/lg_ffi.h says which function
-- returns which). The numbers are Linux's errno values.
local tostring = tostring

local M = {
  OK = 0,
  ENOENT = -2,     -- not there (no match, no such field)
  E2BIG = -7,      -- over a size limit (a batch's 4 GiB arena)
  ENOMEM = -12,    -- out of memory
  EINVAL = -22,    -- invalid argument or input (text in the error buffer)
  ENOSPC = -28,    -- the caller's buffer is too small
  ERANGE = -34,    -- record index out of range
  EOVERFLOW = -75, -- over a limit of the work (PCRE2's match limit)
  EOPNOTSUPP = -95, -- not supported here
}

-- Messages shared by every wrapper; a wrapper passes its own wording for
-- the statuses that mean more in its area (E2BIG of a sample, of a regex).
local texts = {
  [M.ENOMEM] = "out of memory",
  [M.EINVAL] = "invalid argument",
  [M.ERANGE] = "record index out of range",
}

-- The message for status rc: own[rc] when the wrapper has one, else the
-- shared text, else "error <rc>".
function M.message(rc, own)
  return (own and own[rc]) or texts[rc] or ("error " .. tostring(rc))
end

return M
