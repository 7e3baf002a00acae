-- Loads KEYS distinct 30-byte keys with 100-byte values through Meridian's
-- Consul KV API, one PUT each. With THREADS wrk threads, thread t writes
-- memory/bench/<t>/<n> (n zero-padded to 30 bytes in all) for n below
-- KEYS / THREADS, round and round: the caller stops wrk once the node
-- holds KEYS keys, so the writes in flight then only replace values.
local made = 0
function setup(thread)
  thread:set("id", made)
  made = made + 1
end
function init(args)
  local threads = tonumber(os.getenv("THREADS") or "2")
  per = math.floor(tonumber(os.getenv("KEYS") or "1000000") / threads)
  n = 0
  value = string.rep("v", 100)
end
request = function()
  local key = string.format("memory/bench/%02d/%014d", id, n % per)
  n = n + 1
  return wrk.format("PUT", "/v1/kv/" .. key, nil, value)
end
