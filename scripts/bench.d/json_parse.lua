-- Benchmark filter (j): JSON-lines app logs. rec:parse_json sets every key
-- as a field (the RFC 3339 "time" becomes the record's time), debug
-- records are dropped, body removed.
function process(rec)
  if not rec:parse_json() then return end
  if rec.level == "debug" then return false end
  rec.body = nil
end
