-- Lua filters as a Fluent Bit DaemonSet ships them (one file, several
-- functions, each named by a [FILTER] section's `call`), unchanged:
--
--   [FILTER]  Name lua  Match kube.*  script filters.lua  call drop_system
--   [FILTER]  Name lua  Match kube.*  script filters.lua  call dedot
--   [FILTER]  Name lua  Match kube.*  script filters.lua  call merge_json
--
-- lugger.lua next to this file runs them in the same order.
local cjson = require("cjson")

local SYSTEM_NAMESPACES = { ["kube-system"] = true, ["kube-public"] = true }

function string:starts(prefix)
  return self:sub(1, #prefix) == prefix
end

-- Drop the logs of system namespaces and of the log collector itself.
function drop_system(tag, timestamp, record)
  local k = record["kubernetes"]
  if k == nil then return 0, 0, 0 end
  if SYSTEM_NAMESPACES[k["namespace_name"]] or k["pod_name"]:starts("fluent-bit") then
    return -1, 0, 0
  end
  return 0, 0, 0
end

local function dedot_map(m)
  if type(m) ~= "table" then return end
  local renamed = {}
  for key in pairs(m) do
    local new = key:gsub("[%./]", "_")
    if new ~= key then renamed[key] = new end
  end
  for old, new in pairs(renamed) do
    m[new], m[old] = m[old], nil
  end
end

-- Elasticsearch field names without dots.
function dedot(tag, timestamp, record)
  local k = record["kubernetes"]
  if k == nil then return 0, 0, 0 end
  dedot_map(k["labels"])
  dedot_map(k["annotations"])
  return 2, timestamp, record
end

-- Apps that log JSON: its keys become fields, `log` goes.
function merge_json(tag, timestamp, record)
  local text = record["log"]
  if type(text) ~= "string" or text:sub(1, 1) ~= "{" then return 0, 0, 0 end
  local ok, parsed = pcall(cjson.decode, text)
  if not ok or type(parsed) ~= "table" then return 0, 0, 0 end
  for key, value in pairs(parsed) do record[key] = value end
  record["log"] = nil
  return 2, timestamp, record
end
