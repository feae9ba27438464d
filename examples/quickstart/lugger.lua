-- The quick-start configuration: reads the bundled example logs once from
-- their start, parses them with two example Lua parsers and prints every
-- record as a JSON line on stdout.
--
--   lugger run -c examples/quickstart/lugger.lua --once
--
-- logs/nginx-access.log  300 nginx "combined" access-log lines (synthetic,
--                        made by tests/fixtures/nginx/generate.py)
-- logs/hdfs.log          the first 100 lines of the Loghub HDFS sample
--                        (see logs/LICENSE-loghub), with CRLF line ends
--
-- Relative paths here (the source's globs and the scripts) are relative
-- to this file, so the command works from any directory.
return {
  settings = {
    -- Checkpoints live here; a second run of the same job reads nothing
    -- new. The environment variable LUGGER_STATE_DIR overrides it (the
    -- README's command points it at a fresh temporary directory).
    state_dir = "/tmp/lugger-quickstart",
    workers = 1,
  },
  sources = {
    examples = {
      type = "file",
      paths = { "logs/*.log" },
      read_from = "head", -- files present at start are read from byte 0
      format = "line",
    },
  },
  pipelines = {
    quickstart = {
      sources = { "examples" },
      -- Both parsers see every record, in this order. Each one sets fields
      -- only on the lines it recognises and leaves the others unchanged,
      -- so an nginx line passes hdfs.lua untouched and vice versa.
      scripts = { "../nginx/nginx.lua", "../loghub/hdfs.lua" },
      outputs = { "out" },
    },
  },
  outputs = {
    out = { type = "stdout" },
  },
}
