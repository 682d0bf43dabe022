-- wrk: GET of one existing key (bench_http.sh creates /v2/keys/bench/get, 100 bytes).
function init(args)
  req = wrk.format("GET", "/v2/keys/bench/get")
end

function request()
  return req
end
