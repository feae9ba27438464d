-- Sends each record to an output by the stream it was written to:
-- log.iostream is "stdout" or "stderr" for container logs (CRI, Docker).
-- Records of stdout keep the pipeline's outputs.
local err_output = "stderr_out"

function init(params)
  if params.stderr_output then err_output = params.stderr_output end
end

function process(rec)
  if rec["log.iostream"] == "stderr" then return err_output end
end
