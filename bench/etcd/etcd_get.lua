-- Range-read one of 1,000 keys through etcd's JSON gateway.
dofile(os.getenv("BENCH_DIR") .. "/etcd_common.lua")
request = function()
  counter = counter + 1
  local body = '{"key":"' .. keys[counter % 1000] .. '"}'
  return wrk.format("POST", "/v3/kv/range", { ["Content-Type"] = "application/json" }, body)
end
