-- wrk script for the benchmarks: POST the body in WRK_BODY with the headers in WRK_HEADERS (one
-- "Name: value" a line), as benchmarks/load.py sets them (a token request as the Web Chat page sends
-- it, or Direct Line's tokens/generate straight at the fake), and print the summary as one JSON
-- line that load.py reads. The environment keeps the fake's secret off wrk's command line.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or ""
for name, value in string.gmatch(os.getenv("WRK_HEADERS") or "", "([^:\n]+):%s*([^\n]*)") do
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
