-- wrk script for the proxy benchmark.
-- Every request carries a ~200-byte Authorization header (an HS256 JWT; secret
-- "bench-secret-bench-secret-bench-secret", sub usr_bench_01, aud gw, exp 2100), like real API
-- traffic. The plain proxy path does not verify it; it only has to read and forward it.
-- Tokens given after the URL (wrk ... URL TOKEN...; the gw-full rows) replace that header: each
-- thread sends them in turn, one request each, so every user's bucket is exercised. Without
-- them no request() function exists and wrk sends one static request, as before.
-- done() prints one machine-readable line that bench/run.py parses (latencies in microseconds).

wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
  .. "eyJzdWIiOiJ1c3JfYmVuY2hfMDEiLCJyb2xlIjoibWVtYmVyIiwiYXVkIjoiZ3ciLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0."
  .. "_g68apRF3d3YS87T8lHUa6qsr8FWcPOZ-t_RTRxTlVk"

init = function(args)
  -- args[0] is the URL; the tokens follow.
  if #args == 0 then
    return
  end
  local requests = {}
  for i = 1, #args do
    requests[i] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. args[i] })
  end
  local turn = 0
  request = function()
    turn = turn % #requests + 1
    return requests[turn]
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,"
      .. "\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d,"
      .. "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"mean_us\":%.1f,\"max_us\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0),
    latency.mean, latency.max))
end
