-- Loads KEYS distinct 30-byte keys with 100-byte values into etcd through
-- its JSON gateway, 128 puts per transaction (etcd's default limit), the
-- keys laid out as in meridian_load.lua.
dofile(os.getenv("BENCH_DIR") .. "/etcd_common.lua")
local made = 0
function setup(thread)
  thread:set("id", made)
  made = made + 1
end
function init(args)
  local threads = tonumber(os.getenv("THREADS") or "2")
  per = math.floor(tonumber(os.getenv("KEYS") or "1000000") / threads)
  n = 0
  value = b64(string.rep("v", 100))
end
request = function()
  local ops = {}
  for _ = 1, 128 do
    local key = b64(string.format("memory/bench/%02d/%014d", id, n % per))
    n = n + 1
    ops[#ops + 1] = '{"requestPut":{"key":"' .. key .. '","value":"' .. value .. '"}}'
  end
  local body = '{"success":[' .. table.concat(ops, ",") .. ']}'
  return wrk.format("POST", "/v3/kv/txn", { ["Content-Type"] = "application/json" }, body)
end
