-- PUT a 100-byte value to one of 1,000 keys through Meridian's Consul KV API.
counter = 0
value = string.rep("x", 100)
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/v1/kv/bench/" .. (counter % 1000), nil, value)
end
