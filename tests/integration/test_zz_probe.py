import time, traceback, json
from tests.integration.conftest import reading, utcnow
def test_probe(city):
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    _, token = city.credential(light)
    limit = city.client.app.state.context.nats.max_payload
    head, tail = b'{"values": {"power_w": 1}, "padding": "', b'"}'
    payload = head + b"p" * (limit - 10 - len(head) - len(tail)) + tail
    r = city.post(token, b'{"messages": [{"device": "%s", "channel": "telemetry", "payload": %s}]}' % (light.encode(), payload))
    print(r.status_code)
    t0 = time.monotonic()
    while True:
        r = city.post(token, [{"device": light, "channel": "telemetry", "payload": json.loads(reading(utcnow(), power_w=5.0))}])
        if r.status_code == 202: break
        time.sleep(0.2)
    print("accepted again after", time.monotonic() - t0)
    t0 = time.monotonic()
    while city.state(light) is None and time.monotonic() - t0 < 20:
        time.sleep(0.2)
    print("state", city.state(light), time.monotonic() - t0)
    for t in city.client.app.state.context.extra["ingest"].tasks:
        print(t.get_name(), t.done())
