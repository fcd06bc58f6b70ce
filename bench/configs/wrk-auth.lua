-- wrk script for the proxy benchmark.
-- Every request carries a ~200-byte Authorization header (an HS256 JWT; secret
-- "bench-secret-bench-secret-bench-secret", sub usr_bench_01, aud gw, exp 2100), like real API
-- traffic. The plain proxy path does not verify it; it only has to read and forward it.
-- done() prints one machine-readable line that bench/run.py parses (latencies in microseconds).

wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
  .. "eyJzdWIiOiJ1c3JfYmVuY2hfMDEiLCJyb2xlIjoibWVtYmVyIiwiYXVkIjoiZ3ciLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0."
  .. "_g68apRF3d3YS87T8lHUa6qsr8FWcPOZ-t_RTRxTlVk"

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
