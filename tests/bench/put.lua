-- wrk: PUT with 100-byte values over distinct keys
-- (/v2/keys/bench/<run>/<thread>-<n>); pass a run name after "--" so that
-- successive runs never overwrite each other's keys.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  run = args[1] or "run"
  value = string.rep("x", 100)
  body = "value=" .. value
  headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
end

function request()
  counter = counter + 1
  return wrk.format("PUT", "/v2/keys/bench/" .. run .. "/" .. tid .. "-" .. counter, headers, body)
end
