-- GET one of 1,000 keys through Meridian's Consul KV API.
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/v1/kv/bench/" .. (counter % 1000) .. "?raw")
end
