-- csv_check.lua - checks that a loghub parser's fields equal the dataset's
-- structured CSV on every line.
--
-- Usage:
--   lugger lua tests/examples/csv_check.lua PARSER.lua LOG CSV MAPPING
--   (a parser that uses lugger.regex runs only inside lugger)
--   luajit     tests/examples/csv_check.lua --self-test
--
-- MAPPING names, for every CSV column other than LineId, EventId and
-- EventTemplate, the record field that must hold it:
--   "Date=date,Time=log_time,Pid=pid:int,Level=level,Content=content"
-- A suffix ":int" says the field is an integer whose decimal text equals
-- the cell; otherwise the field is a string equal to the cell. A suffix
-- "?" says an empty cell means the field is absent (e.g. Linux lines with
-- no [pid]). A column the mapping leaves out is an error, so the check
-- always covers every header column and Content.
--
-- For each line i of LOG (split like the "line" framing: LF ends a record,
-- a CR before it is dropped) the parser's process() gets a record whose
-- body is the line; CSV row i (RFC 4180) must have LineId i. The record
-- must be kept, keep its body, carry exactly the mapped fields (plus body)
-- and hold the expected values. The harness prints a summary and the first
-- mismatches, and exits 1 if there is any (2 on a usage or input error).

local common = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local MAX_SHOWN = 10

-- Parses CSV text per RFC 4180: fields separated by commas, records by
-- CRLF (a bare LF is accepted too, as many writers emit it), fields in
-- double quotes may hold commas, CR, LF and doubled quotes (""), and the
-- last record may lack a line break. Returns a list of rows (lists of
-- strings); raises an error with the line number on malformed input.
local function parse_csv(s)
  local rows, row, i, n = {}, {}, 1, #s
  if n == 0 then return rows end
  local function fail(msg, at)
    local _, lf = s:sub(1, at):gsub("\n", "")
    error(("csv line %d: %s"):format(lf + 1, msg), 0)
  end
  while true do
    local field
    if s:sub(i, i) == '"' then
      local parts, j = {}, i + 1
      while true do
        local q = s:find('"', j, true)
        if not q then fail("unterminated quoted field", i) end
        parts[#parts + 1] = s:sub(j, q - 1)
        if s:sub(q + 1, q + 1) == '"' then
          parts[#parts + 1] = '"'
          j = q + 2
        else
          i = q + 1
          break
        end
      end
      field = table.concat(parts)
    else
      local e = s:find("[,\r\n]", i) or n + 1
      field = s:sub(i, e - 1)
      if field:find('"', 1, true) then fail("quote inside an unquoted field", i) end
      i = e
    end
    row[#row + 1] = field
    local d = s:sub(i, i)
    if d == "," then
      i = i + 1
    elseif d == "" then
      rows[#rows + 1] = row
      return rows
    else
      if d == "\r" and s:sub(i + 1, i + 1) == "\n" then
        i = i + 2
      elseif d == "\n" then
        i = i + 1
      else
        fail("unexpected character after a field: " .. ("%q"):format(d), i)
      end
      rows[#rows + 1] = row
      row = {}
      if i > n then return rows end
    end
  end
end

-- Parses the MAPPING argument into a list of
-- { column =, field =, int = bool, optional = bool }.
local function parse_mapping(m)
  local list = {}
  for item in m:gmatch("[^,]+") do
    local col, field, suffix = item:match("^%s*([^=]-)%s*=%s*([%w_.]+)(%S*)%s*$")
    if not col or col == "" then error("bad mapping entry: " .. item, 0) end
    local e = { column = col, field = field, int = false, optional = false }
    if suffix:sub(-1) == "?" then e.optional, suffix = true, suffix:sub(1, -2) end
    if suffix == ":int" then
      e.int = true
    elseif suffix ~= "" then
      error("bad mapping suffix in " .. item .. " (use :int and/or ?)", 0)
    end
    list[#list + 1] = e
  end
  return list
end

local function show(v)
  if v == nil then return "<absent>" end
  if type(v) == "string" then return ("%q"):format(v) end
  return type(v) .. " " .. tostring(v)
end

-- Returns nil when field value `got` equals CSV cell `cell` under mapping
-- entry `e`, else the text of the expected value.
local function differs(e, cell, got)
  if e.optional and cell == "" then
    if got == nil then return nil end
    return "<absent>"
  end
  if e.int then
    if type(got) == "number" and got == math.floor(got)
        and ("%d"):format(got) == cell then
      return nil
    end
    return "integer " .. ("%q"):format(cell)
  end
  if got == cell then return nil end
  return ("%q"):format(cell)
end

local function check(parser, logpath, csvpath, mapping_arg)
  local mapping = parse_mapping(mapping_arg)
  local lines = common.split_lines(common.read_file(logpath))
  local rows = parse_csv(common.read_file(csvpath))
  local header = table.remove(rows, 1) or {}
  local colidx = {}
  for k, name in ipairs(header) do colidx[name] = k end

  -- Every header column (other than the line number and the paper's
  -- template labels) must be mapped, and every mapped column must exist.
  local mapped, fields = {}, { body = true }
  for _, e in ipairs(mapping) do
    if not colidx[e.column] then error("mapping names unknown column " .. e.column, 0) end
    mapped[e.column] = true
    fields[e.field] = true
  end
  for _, name in ipairs(header) do
    if name ~= "LineId" and name ~= "EventId" and name ~= "EventTemplate"
        and not mapped[name] then
      error("column " .. name .. " is not mapped to a field", 0)
    end
  end
  if not colidx.LineId then error(csvpath .. ": no LineId column", 0) end

  local env = common.load_script(parser)
  local mismatches, compared, shown = 0, 0, 0
  local function report(lineno, what)
    mismatches = mismatches + 1
    if shown < MAX_SHOWN then
      shown = shown + 1
      io.write(("  line %d: %s\n"):format(lineno, what))
    end
  end

  if #rows ~= #lines then
    report(0, ("%s has %d lines but %s has %d rows"):format(logpath, #lines, csvpath, #rows))
  end
  for i = 1, math.min(#rows, #lines) do
    local row = rows[i]
    if row[colidx.LineId] ~= tostring(i) then
      report(i, "CSV row has LineId " .. show(row[colidx.LineId]))
    end
    local ok, st = pcall(common.process, env, lines[i])
    if not ok then
      report(i, "script error: " .. tostring(st))
    else
      if st.dropped then report(i, "record dropped") end
      if st.fields.body ~= lines[i] then
        report(i, "body changed to " .. show(st.fields.body))
      end
      for _, e in ipairs(mapping) do
        local cell = row[colidx[e.column]]
        local got = st.fields[e.field]
        compared = compared + 1
        if cell == nil then
          report(i, "CSV row has no column " .. e.column)
        else
          local want = differs(e, cell, got)
          if want then
            report(i, ("%s -> %s: expected %s, got %s"):format(e.column, e.field, want, show(got)))
          end
        end
      end
      for k, v in pairs(st.fields) do
        if not fields[k] then report(i, ("unexpected field %s = %s"):format(k, show(v))) end
      end
    end
  end
  if mismatches > shown then
    io.write(("  ... and %d more\n"):format(mismatches - shown))
  end
  io.write(("csv_check: %s on %s: %d lines, %d CSV rows, %d fields compared, %d mismatches\n")
    :format(parser, logpath, #lines, #rows, compared, mismatches))
  return mismatches == 0
end

-- Checks parse_csv itself on the RFC 4180 cases the loghub files use and
-- the ones they could use.
local function self_test()
  local cases = {
    { "a,b\r\n1,2\r\n", { { "a", "b" }, { "1", "2" } } },
    { "a,b\n1,2", { { "a", "b" }, { "1", "2" } } },
    { 'x,"a,b",y\n', { { "x", "a,b", "y" } } },
    { '"say ""hi""",2\n', { { 'say "hi"', "2" } } },
    { '"line1\r\nline2\nline3",z\r\n', { { "line1\r\nline2\nline3", "z" } } },
    { ',,\n', { { "", "", "" } } },
    { 'a,\n"",b', { { "a", "" }, { "", "b" } } },
    { '""""', { { '"' } } },
  }
  local failed = 0
  for k, c in ipairs(cases) do
    local ok, got = pcall(parse_csv, c[1])
    local same = ok and #got == #c[2]
    if same then
      for r = 1, #got do
        if #got[r] ~= #c[2][r] then same = false break end
        for f = 1, #got[r] do
          if got[r][f] ~= c[2][r][f] then same = false end
        end
      end
    end
    if not same then
      failed = failed + 1
      io.write(("self-test case %d failed: %q\n"):format(k, c[1]))
    end
  end
  for k, bad in ipairs({ '"open', 'a"b,c\n', '"a"b\n', "a\rb\n" }) do
    if pcall(parse_csv, bad) then
      failed = failed + 1
      io.write(("self-test bad case %d was accepted: %q\n"):format(k, bad))
    end
  end
  local lines = common.split_lines("a\r\nb\n\nc\r")
  if #lines ~= 4 or lines[1] ~= "a" or lines[3] ~= "" or lines[4] ~= "c\r" then
    failed = failed + 1
    io.write("self-test split_lines failed\n")
  end
  io.write(("csv_check self-test: %d failures\n"):format(failed))
  return failed == 0
end

local ok, res
if arg[1] == "--self-test" then
  ok, res = pcall(self_test)
elseif #arg == 4 then
  ok, res = pcall(check, arg[1], arg[2], arg[3], arg[4])
else
  io.stderr:write("usage: csv_check.lua PARSER.lua LOG CSV MAPPING | --self-test\n")
  os.exit(2)
end
if not ok then
  io.stderr:write("csv_check: " .. tostring(res) .. "\n")
  os.exit(2)
end
os.exit(res and 0 or 1)
