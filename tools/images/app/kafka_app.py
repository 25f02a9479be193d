"""The demo application in the kafka-client image: a real librdkafka client (confluent-kafka) talking to the
sidecar on localhost:9092, as an injected application does.

    kafka_app.py produce TOPIC [INTERVAL_S]   one record per interval on ONE long-lived producer, forever; prints
                                              `ok <value>` or `error <value> <KafkaError name>` per record
    kafka_app.py consume TOPIC COUNT [TIMEOUT_S]
                                              reads COUNT records from the start of TOPIC (a fresh group), one
                                              value per line; exits 1 if fewer arrived in time
"""
import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer

BROKERS = os.environ.get("KAFKA_BOOTSTRAP", "localhost:9092")


def produce(topic: str, interval: float) -> None:
    producer = Producer({
        "bootstrap.servers": BROKERS,
        "linger.ms": 0,
        "retries": 0,
        "message.timeout.ms": 10000,
        "enable.idempotence": False,
        "client.id": "kproxy-demo-app",
    })
    pod = os.environ.get("POD_NAME", "app")

    def report(err, msg):
        value = msg.value().decode()
        print(f"ok {value}" if err is None else f"error {value} {err.name()}", flush=True)

    n = 0
    while True:
        value = f"{pod}-{n}"
        try:
            producer.produce(topic, value.encode(), on_delivery=report)
        except KafkaException as e:
            # librdkafka refuses at once while the topic carries a permanent error (e.g. after an authorization
            # failure in its metadata); the app reports it like a failed delivery and keeps going.
            print(f"error {value} {e.args[0].name()}", flush=True)
        producer.flush(15)
        n += 1
        time.sleep(interval)


def consume(topic: str, count: int, timeout: float) -> int:
    consumer = Consumer({
        "bootstrap.servers": BROKERS,
        "group.id": f"kproxy-demo-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    got, deadline = 0, time.monotonic() + timeout
    while got < count and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            print(f"# {msg.error().name()}", file=sys.stderr, flush=True)
            continue
        print(msg.value().decode(), flush=True)
        got += 1
    consumer.close()
    return 0 if got >= count else 1


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "produce":
        produce(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 1.0)
        return 0
    if len(sys.argv) >= 4 and sys.argv[1] == "consume":
        return consume(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 30.0)
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main())
