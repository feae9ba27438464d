-- DaemonSet to Kafka: every container log on the node goes to Kafka, nginx
-- access lines (stdout) to the topic `access-log`, everything on stderr
-- (nginx's error log) to `error-log`, parsed into fields by nginx_cri.lua.
--
--   lugger check -c examples/kafka/lugger.lua
--   KAFKA_BROKERS=kafka-0.kafka:9092,kafka-1.kafka:9092 lugger run -c examples/kafka/lugger.lua
--
-- Environment (set in the DaemonSet's pod spec):
--   KAFKA_BROKERS         bootstrap brokers, comma-separated (default kafka:9092)
--   KAFKA_BROKER_VERSION  only for brokers older than 0.10 (e.g. "0.9.0.1"):
--                         no version probe, no idempotence, no headers
--   LUGGER_PODS_DIR       the kubelet's pod log directory (default /var/log/pods)
--   LUGGER_KUBE_API       "in-cluster" (default), "off", or the API's URL
--   NODE_NAME             this node (from the downward API: spec.nodeName)
local brokers = os.getenv("KAFKA_BROKERS") or "kafka:9092"
local legacy = os.getenv("KAFKA_BROKER_VERSION")

local function kafka(topic)
  local o = {
    type = "kafka",
    brokers = brokers,
    topic = topic,
    key = "field:k8s.pod.uid", -- one pod's lines stay in order (one partition)
    compression = "lz4",
    acks = "all",
    linger = "10ms",
    max_batch_bytes = "1MiB",
    max_batch_size = 10000,
  }
  if legacy ~= nil and legacy ~= "" then
    o.idempotence = false -- Kafka 0.11+
    o.headers = false -- Kafka 0.11+
    o.librdkafka = {
      ["api.version.request"] = "false", -- 0.9 has no ApiVersions request
      ["broker.version.fallback"] = legacy,
    }
  end
  return o
end

return {
  settings = { state_dir = "/var/lib/lugger", memory_budget = "64MiB" },
  sources = {
    pods = {
      type = "kubernetes",
      pods_dir = os.getenv("LUGGER_PODS_DIR") or "/var/log/pods",
      docker_dir = "", -- containerd/CRI-O nodes: CRI files only
      kube_api = os.getenv("LUGGER_KUBE_API") or "in-cluster",
    },
  },
  pipelines = {
    nginx = {
      sources = { "pods" },
      scripts = { "nginx_cri.lua" }, -- relative to this file
      outputs = { "access_log" }, -- the script routes stderr to error_log
    },
  },
  outputs = {
    access_log = kafka("access-log"),
    error_log = kafka("error-log"),
  },
}
