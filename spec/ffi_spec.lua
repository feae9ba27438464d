-- The FFI declarations in lua/lugger/ must match the C: every lg_ffi_*
-- prototype in src/pipeline/lg_ffi.h is declared, identically, in exactly one
-- wrapper module, and every struct that crosses the FFI has the C
-- compiler's layout.
local ffi = require("ffi")
local batch = require("lugger.batch")

local SRC = os.getenv("LUGGER_SOURCE_DIR") or "."

local function read(path)
  local f = assert(io.open(SRC .. "/" .. path, "r"))
  local s = f:read("*a")
  f:close()
  return s
end

-- One spelling per declaration: comments removed, whitespace collapsed.
local function normalize(decl)
  decl = decl:gsub("/%*.-%*/", ""):gsub("%s+", " ")
  decl = decl:gsub("%s*([%(%),;%*])%s*", "%1"):gsub("^ ", ""):gsub(" $", "")
  return decl
end

local function prototypes(text)
  local out = {}
  text = text:gsub("/%*.-%*/", "")
  for decl in text:gmatch("[%w_ ]+[%s%*]+lg_ffi_[%w_]+%s*%b()%s*;") do
    local name = decl:match("(lg_ffi_[%w_]+)%s*%(")
    out[name] = normalize(decl)
  end
  return out
end

local MODULES = { "batch", "json", "log", "mem", "parse", "record", "sample" }

describe("the FFI declarations", function()
  it("match src/pipeline/lg_ffi.h, each in one wrapper module", function()
    local header = prototypes(read("src/pipeline/lg_ffi.h"))
    local declared, where = {}, {}
    for _, m in ipairs(MODULES) do
      for name, decl in pairs(prototypes(require("lugger." .. m).cdef)) do
        assert.is_nil(where[name], name .. " declared in " .. tostring(where[name]) .. " and " .. m)
        declared[name], where[name] = decl, m
      end
    end
    local n = 0
    for name, decl in pairs(header) do
      n = n + 1
      assert.equals(decl, declared[name], name)
    end
    for name in pairs(declared) do
      assert.is_not_nil(header[name], name .. " is not in src/pipeline/lg_ffi.h")
    end
    assert.is_true(n >= 25, "found only " .. n .. " prototypes in src/pipeline/lg_ffi.h")
  end)

  it("resolve in the binary", function()
    for _, m in ipairs(MODULES) do
      for name in pairs(prototypes(require("lugger." .. m).cdef)) do
        assert.is_not_nil(ffi.C[name], name)
      end
    end
  end)

  it("lay structs out as the C compiler does", function()
    local types = batch.types .. require("lugger.record").types
    local checked = 0
    for body, tname in types:gmatch("typedef struct [%w_]+ (%b{}) ([%w_]+);") do
      for decl in body:sub(2, -2):gmatch("[^;]+") do
        -- "uint32_t key_off, key_len" / "const char *key" / "char buf[40]":
        -- the field names are the last identifier of each comma part.
        local names = {}
        for part in decl:gsub("%b[]", ""):gmatch("[^,]+") do
          names[#names + 1] = part:match("([%w_]+)%s*$")
        end
        for _, field in ipairs(names) do
          local c = batch.c_layout(tname, field)
          assert.is_not_nil(c, tname .. "." .. field .. " unknown to lg_ffi_abi_layout")
          assert.equals(c, tonumber(ffi.offsetof(tname, field)), tname .. "." .. field)
          checked = checked + 1
        end
      end
      if tname ~= "lg_batch_t" then -- Lua declares only its FFI-visible prefix
        assert.equals(batch.c_layout(tname), tonumber(ffi.sizeof(tname)), "sizeof " .. tname)
      end
    end
    assert.is_true(checked >= 40, "checked only " .. checked .. " fields")
  end)

  it("declare the FFI-visible part of lg_batch_t in the header's order", function()
    local h = read("src/pipeline/lg_batch.h")
    local visible = h:match("FFI%-visible.-\n(.-)%s*/%* %-%-%- C only")
    assert.is_not_nil(visible)
    visible = visible:gsub("/%*.-%*/", "")
    local c_fields = {}
    for decl in visible:gmatch("[^;]+;") do
      local name = decl:match("([%w_]+)%s*;")
      if name then c_fields[#c_fields + 1] = name end
    end
    local body = batch.types:match("typedef struct lg_batch (%b{}) lg_batch_t;")
    local lua_fields = {}
    for name in body:gmatch("([%w_]+)%s*;") do lua_fields[#lua_fields + 1] = name end
    assert.same(c_fields, lua_fields)
  end)
end)
