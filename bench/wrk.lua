-- wrk script for python -m bench (bench/measure.py): one fixed request per scenario, results as one JSON line.
--
--   wrk -t2 -c32 -d10s -s bench/wrk.lua URL -- METHOD BODY_FILE [HEADER ...]
--
-- BODY_FILE holds the exact request body bytes (binary-safe; "-" for none); each HEADER is
-- "Name: value". The request is formatted once per thread, so the script costs nothing per
-- request (no response() callback: wrk then skips handing every response to Lua).
-- done() prints "BENCH_JSON {...}": counts, duration and latency percentiles in microseconds.
-- errors.status is wrk's count of responses with a status >= 400 (it has no other).

function init(args)
  wrk.method = args[1] or "GET"
  local path = args[2]
  if path and path ~= "-" then
    local f = assert(io.open(path, "rb"))
    wrk.body = f:read("*a")
    f:close()
  end
  for i = 3, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    assert(name, "a header must be 'Name: value', got " .. args[i])
    wrk.headers[name] = value
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local p = function(q) return latency:percentile(q) end
  io.write(string.format(
    'BENCH_JSON {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, ' ..
    '"errors": {"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}, ' ..
    '"latency_us": {"min": %.0f, "mean": %.1f, "stdev": %.1f, "max": %.0f, ' ..
    '"p50": %.0f, "p90": %.0f, "p99": %.0f, "p999": %.0f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    p(50), p(90), p(99), p(99.9)))
end
