-- The lugger version, for scripts and specs.
return { major = 0, minor = 1, patch = 0, text = "0.1.0" }
