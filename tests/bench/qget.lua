-- wrk: quorum GET of one existing key (bench_cluster.sh creates
-- /v2/keys/bench/get, 100 bytes): a linearizable read through Raft.
function init(args)
  req = wrk.format("GET", "/v2/keys/bench/get?quorum=true")
end

function request()
  return req
end
