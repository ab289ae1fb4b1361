-- wrk script for every hit-path run: cycles through the request paths in the file given after
-- `--` (one a line), so one key and ten thousand pay the same per-request Lua cost, and prints
-- one JSON summary line at the end for bench/wrk.py to parse.
local prepared = {}
local count, next_index = 0, 0

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then
      count = count + 1
      -- wrk.format adds the -H headers (Host, the guard header) to each request.
      prepared[count] = wrk.format("GET", line)
    end
  end
end

function request()
  next_index = next_index % count + 1
  return prepared[next_index]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(90)),
    math.floor(latency:percentile(99)), latency.max))
end
