"""A long-lived Kafka producer for e2e tests: one connection, one record per stdin line, one outcome per line.

Prints `ok <value>` or `error <value> <KafkaError name>` for each record once its delivery is known, so a test
can tell which records a policy change refused on an already-open connection.
"""
import sys

from confluent_kafka import Producer


def main() -> None:
    brokers, topic = sys.argv[1], sys.argv[2]
    producer = Producer({
        "bootstrap.servers": brokers,
        "linger.ms": 0,
        "retries": 0,
        "message.timeout.ms": 15000,
        "enable.idempotence": False,
    })

    def report(err, msg):
        value = msg.value().decode()
        if err is None:
            print(f"ok {value}", flush=True)
        else:
            print(f"error {value} {err.name()}", flush=True)

    for line in sys.stdin:
        producer.produce(topic, line.rstrip("\n").encode(), on_delivery=report)
        producer.flush(20)
    producer.flush(20)


if __name__ == "__main__":
    main()
