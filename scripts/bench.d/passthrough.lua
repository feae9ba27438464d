-- Benchmark filter (b): touch nothing, keep every record.
function process(rec) end
