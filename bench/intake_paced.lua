-- wrk script for bench/intake_sweep.py: bench/intake.lua's requests, each connection
-- pausing a fixed time before each request, so the rate stays near
-- connections x 1000 / (pause + latency) per second instead of as fast as the server goes.
--
-- Usage: wrk ... -s bench/intake_paced.lua <url> -- <dir> <prefix> <pause ms>

local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "intake.lua")

local load_pool = init

function init(args)
   load_pool(args)
   pause = tonumber(args[3])
end

function delay()
   return pause
end
