-- wrk script: POST signed intents to a running gateway, each intent once.
--
--   tollgate bench --write-intents /tmp/intents.txt --count 200000
--   wrk -t2 -c64 -d10s --latency -s scripts/wrk-intents.lua \
--       http://127.0.0.1:8080 -- /tmp/intents.txt 2
--
-- The arguments: the intents file and wrk's thread count (-t). Each
-- thread takes every n-th line, so no intent is sent twice; a thread that
-- runs out stops. Answers other than 200 are counted and printed at the
-- end.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path = args[1] or "intents.txt"
  local stride = tonumber(args[2] or "1")
  bodies = {}
  local i = 0
  for line in io.lines(path) do
    if i % stride == id then
      table.insert(bodies, line)
    end
    i = i + 1
  end
  next_body = 1
  not_ok = 0
end

function request()
  local body = bodies[next_body]
  if body == nil then
    wrk.thread:stop()
    body = bodies[#bodies]
  end
  next_body = next_body + 1
  return wrk.format("POST", "/v1/intents", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status ~= 200 then
    not_ok = not_ok + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("not_ok") or 0)
  end
  io.write(string.format("answers other than 200: %d\n", bad))
  io.write(string.format("decisions/s (200 answers): %.0f\n",
    (summary.requests - bad) / (summary.duration / 1e6)))
end
