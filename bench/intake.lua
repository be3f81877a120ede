-- wrk script for the intake benchmark (bench/intake.py).
--
-- Every request is the next pre-signed delivery of the pool file WRK_POOL: one per line, webhook id,
-- signature (hex) and compact JSON body, tab-separated. With several threads, thread k takes lines
-- k, k + n, k + 2n, ... (n = WRK_THREADS), so no delivery is sent twice unless the pool runs out;
-- then it starts over and `wrapped` says so (the run is then invalid: repeats are cheap duplicates).
-- 2xx answers are counted, and the delivery ids they name (responder's answers carry one) written
-- to WRK_ACKS, one a line, so the bench can look each one up in the store.

local threads = {}

function setup(thread)
   thread:set("index", #threads)
   table.insert(threads, thread)
end

function init(args)
   local count = tonumber(os.getenv("WRK_THREADS") or "1")
   pool = {}
   local line_number = 0
   for line in io.lines(os.getenv("WRK_POOL")) do
      if line_number % count == index then
         local id, signature, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
         pool[#pool + 1] = { id, signature, body }
      end
      line_number = line_number + 1
   end
   pool_size, position, ok, failed, duplicates, wrapped, acks = #pool, 1, 0, 0, 0, 0, {}
end

function request()
   local delivery = pool[position]
   position = position + 1
   if position > #pool then
      position, wrapped = 1, wrapped + 1
   end
   return wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      ["X-Webhook-Id"] = delivery[1],
      ["X-PagerDuty-Signature"] = "v1=" .. delivery[2],
      -- adnanh/webhook cannot parse `v1=`: its hook reads the same digest from here.
      ["X-Signature"] = "sha256=" .. delivery[2],
   }, delivery[3])
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      ok = ok + 1
      local id = body:match('"delivery_id":%s*"([^"]+)"')
      if id then
         acks[#acks + 1] = id
      end
      if body:find('"status":%s*"duplicate"') then
         duplicates = duplicates + 1
      end
   else
      failed = failed + 1
   end
end

function done(summary, latency, requests)
   local totals = { ok = 0, failed = 0, duplicates = 0, wrapped = 0, pool_size = 0 }
   local out = assert(io.open(os.getenv("WRK_ACKS"), "w"))
   for _, thread in ipairs(threads) do
      for name, _ in pairs(totals) do
         totals[name] = totals[name] + thread:get(name)
      end
      for _, id in ipairs(thread:get("acks")) do
         out:write(id, "\n")
      end
   end
   out:close()
   local e = summary.errors
   io.write(string.format(
      'WRK_SUMMARY {"requests": %d, "duration_us": %d, "ok": %d, "non_2xx": %d, "duplicates": %d, '
         .. '"wrapped": %d, "pool": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, '
         .. '"timeouts": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, totals.ok, totals.failed, totals.duplicates,
      totals.wrapped, totals.pool_size, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max
   ))
end
