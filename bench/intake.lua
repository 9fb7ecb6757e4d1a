-- wrk script for bench/intake.py: sends pre-built, pre-signed raw HTTP requests.
--
-- Usage: wrk ... -s bench/intake.lua <url> -- <dir> <prefix>
-- Thread n loads <dir>/<prefix>-<n>.req, so no two threads send the same request. A file
-- holds records "<byte length>\n<raw request>". A thread that runs out of requests starts
-- over (wrk cannot stop one thread early) and reports how many it re-sent, so the caller
-- can reject a run that needed unique requests. done() prints one line, "BENCH_JSON {...}",
-- with wrk's summary, latency percentiles (microseconds) and the count of each status.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

function init(args)
   local path = string.format("%s/%s-%d.req", args[1], args[2], tid)
   local file = assert(io.open(path, "rb"))
   local data = file:read("*a")
   file:close()
   pool = {}
   local pos = 1
   while pos <= #data do
      local newline = assert(string.find(data, "\n", pos, true), "bad record header")
      local length = tonumber(string.sub(data, pos, newline - 1))
      pool[#pool + 1] = string.sub(data, newline + 1, newline + length)
      pos = newline + length + 1
   end
   pool_size = #pool
   sent = 0
   statuses = {}
end

function request()
   sent = sent + 1
   return pool[(sent - 1) % pool_size + 1]
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
   local sent_total, pool_total, resent = 0, 0, 0
   local counts = {}
   for _, thread in ipairs(threads) do
      local thread_sent, thread_pool = thread:get("sent"), thread:get("pool_size")
      sent_total = sent_total + thread_sent
      pool_total = pool_total + thread_pool
      resent = resent + math.max(0, thread_sent - thread_pool)
      for status, count in pairs(thread:get("statuses")) do
         counts[status] = (counts[status] or 0) + count
      end
   end
   local parts = {}
   for status, count in pairs(counts) do
      parts[#parts + 1] = string.format('"%s": %d', status, count)
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_JSON {"duration_us": %d, "requests": %d, "bytes": %d, "sent": %d, "pool": %d,'
         .. ' "resent": %d, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d,'
         .. ' "timeout": %d}, "latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d,'
         .. ' "mean": %.1f}, "statuses": {%s}}\n',
      summary.duration, summary.requests, summary.bytes, sent_total, pool_total, resent,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, table.concat(parts, ", ")))
end
