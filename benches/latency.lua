-- wrk hook for benches/load.sh: the tail of the latency distribution beyond --latency's 99 %.
done = function(summary, latency, requests)
  io.write(string.format("tail p99.9 %.2fms max %.2fms\n",
    latency:percentile(99.9) / 1000, latency.max / 1000))
end
