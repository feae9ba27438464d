-- A Java service on Kubernetes: its pods (label app=orders) log with
-- log4j/logback ("2024-05-01 12:00:00.123 ERROR [main] c.e.Orders - text")
-- and print stack traces over many lines. Each stack trace becomes one
-- record with the line that started it, which java.lua then parses.
--
--   lugger check -c examples/k8s-java/lugger.lua
--   lugger test examples/k8s-java/java.lua tests/fixtures/k8s/java.log --format line
--
-- Multiline grouping: the "java" preset makes one record of a stack trace
-- (the exception line, "\tat ..." frames, "Caused by: ...", "... N more"),
-- per stream, after the CRI envelope is removed. To keep each trace in the
-- record of the log line before it, use a rule on the timestamp instead:
--   multiline = { start = [[^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}]] },
return {
  settings = { state_dir = "/var/lib/lugger" },
  sources = {
    orders = {
      type = "kubernetes",
      include = { labels = { app = "orders" } },
      multiline = "java",
      read_from = "tail",
    },
  },
  pipelines = {
    orders = {
      sources = { "orders" },
      scripts = { "java.lua" },
      outputs = { "out" },
    },
  },
  outputs = {
    out = { type = "stdout" },
  },
}
