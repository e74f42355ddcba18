-- wrk script: every request is a distinct GHL InboundMessage (unique messageId and body),
-- spread over a pool of contacts so leads are reused as in real traffic.
-- Env: WEBHOOK_SECRET (required), LOCATION_ID (default LOC_BENCH), CONTACTS (default 500).
local secret = os.getenv("WEBHOOK_SECRET") or ""
local location = os.getenv("LOCATION_ID") or "LOC_BENCH"
local contacts = tonumber(os.getenv("CONTACTS") or "500")
local run = tostring(os.time())
local counter = 0
local threads = {}
-- thread_id is a global set per thread by setup() (a local here would shadow it).

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Webhook-Secret"] = secret
end

function request()
  counter = counter + 1
  local id = run .. "-" .. tostring(thread_id) .. "-" .. counter
  local contact = "wrk-contact-" .. (counter % contacts)
  local body = string.format(
    '{"type":"InboundMessage","locationId":"%s","contactId":"%s","conversationId":"conv-%s",' ..
    '"messageId":"wrk-%s","body":"Yes I am interested, can we book a call? (%s)","messageType":"SMS",' ..
    '"direction":"inbound","status":"delivered","contentType":"text/plain","attachments":[]}',
    location, contact, contact, id, id)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local non2xx = summary.errors.status
  io.write(string.format(
    "WRK_RESULT requests=%d seconds=%.2f rps=%.1f p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f max_ms=%.2f " ..
    "non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, non2xx, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout))
end
