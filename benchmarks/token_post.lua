-- wrk script for the benchmarks: POST a token request with a JSON body, as the Web Chat page does,
-- and print the summary as one JSON line that benchmarks/load.py reads.
wrk.method = "POST"
wrk.body = '{"userName":"Ann"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Origin"] = "https://www.contoso.com"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
