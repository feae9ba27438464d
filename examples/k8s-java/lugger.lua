-- A Java service on Kubernetes: its pods (label app=orders) log with
-- log4j/logback ("2024-05-01 12:00:00.123 ERROR [main] c.e.Orders - text")
-- and print stack traces over many lines. Each stack trace becomes one
-- record with the line that started it, which java.lua then parses.
--
--   lugger check -c examples/k8s-java/lugger.lua
--   lugger test examples/k8s-java/java.lua tests/fixtures/k8s/java.log --format line
--
-- Multiline grouping: the "java" preset joins "\tat ...", "Caused by: ..."
-- and "... N more" lines to the line before them. It is the `multiline`
-- option of file and kubernetes sources; uncomment it where your lugger
-- has it (lugger check names the key if it does not).
return {
  settings = { state_dir = "/var/lib/lugger" },
  sources = {
    orders = {
      type = "kubernetes",
      include = { labels = { app = "orders" } },
      -- multiline = "java",
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
